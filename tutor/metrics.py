"""Prometheus metrics of the chat (reply latency, how replies ended, errors), exposed by /metrics.

Recorded by tutor.chat in the web process that served the reply; prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by deploy/start-web.sh) adds every uvicorn worker
of a host together at scrape time (config/metrics.py; docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# A tutor reply on two CPU cores takes seconds; on a GPU well under one; the timeout is 120 s.
_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
MODES = ("stream", "whole")  # streamed (Server-Sent Events) or answered at once

CHAT_REPLY_SECONDS = Histogram(
    "tutor_chat_reply_seconds",
    "Time from a student message's reply starting to its being stored, for replies that completed.",
    ["mode"],
    buckets=_BUCKETS,
)
CHAT_FIRST_TOKEN_SECONDS = Histogram(
    "tutor_chat_first_token_seconds",
    "Time from a streamed reply starting to its first piece of text reaching the student.",
    buckets=_BUCKETS,
)
CHAT_REPLIES = Counter(
    "tutor_chat_replies",
    "Tutor replies by how they ended: complete, failed (tutor_chat_errors_total says why) or interrupted"
    " (the student left).",
    ["mode", "outcome"],
)
CHAT_ERRORS = Counter(
    "tutor_chat_errors",
    "Tutor replies that failed, by the error code the student was given (model_unavailable, message_too_long).",
    ["mode", "code"],
)

for _mode in MODES:  # every series exists from the start, at 0, so a rate over it is defined
    CHAT_REPLY_SECONDS.labels(mode=_mode)
    for _outcome in ("complete", "failed", "interrupted"):
        CHAT_REPLIES.labels(mode=_mode, outcome=_outcome)
    for _code in ("model_unavailable", "message_too_long"):
        CHAT_ERRORS.labels(mode=_mode, code=_code)


def reply_completed(*, mode: str, seconds: float) -> None:
    CHAT_REPLIES.labels(mode=mode, outcome="complete").inc()
    CHAT_REPLY_SECONDS.labels(mode=mode).observe(seconds)


def reply_failed(*, mode: str, code: str) -> None:
    CHAT_REPLIES.labels(mode=mode, outcome="failed").inc()
    CHAT_ERRORS.labels(mode=mode, code=code).inc()


def reply_interrupted(*, mode: str) -> None:
    CHAT_REPLIES.labels(mode=mode, outcome="interrupted").inc()


def first_token(*, seconds: float) -> None:
    CHAT_FIRST_TOKEN_SECONDS.observe(seconds)

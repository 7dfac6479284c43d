"""Guardrails on both sides of the model. All rules live here.

Input (the student's message), before the model sees it:
* `self_harm` and `abuse`: a human must look. The student gets a caring, safe
  reply with where to find help (no model call), and the course's teachers get a
  flag.
* `prompt_injection`: attempts to override the tutor's instructions. The
  student gets a short refusal (no model call) and the teachers a flag.

Output (the tutor's reply), before the student sees it:
* `instructions_leak`: the reply recites the system prompt.
* `unsafe_output`: the reply contains content a tutor must never show.
  The reply is replaced by a safe message and flagged.

Rules are regular expressions, case-insensitive. Schools add their own with the
GUARDRAILS_EXTRA_INPUT_RULES / GUARDRAILS_EXTRA_OUTPUT_RULES settings (JSON:
`{"category": ["regex", ...]}`); a category with its own safe reply can be
added in SAFE_REPLIES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from django.conf import settings

INPUT_RULES: dict[str, list[str]] = {
    "self_harm": [
        r"\b(kill(ing)?|hurt(ing)?|harm(ing)?|cut(ting)?) myself\b",
        r"\bsuicid(e|al)\b",
        r"\b(want|going|plan(ning)?) to die\b",
        r"\bend (it all|my life)\b",
        r"\bself[- ]harm",
        r"\bno reason to (live|go on)\b",
        r"\bdon'?t want to (live|be alive)\b",
    ],
    "abuse": [
        r"\b(he|she|they|my (dad|father|mum|mom|mother|stepdad|stepmom|uncle|aunt|teacher|coach|brother|sister"
        r"|boyfriend|girlfriend)) (hits|beats|hurts|touches|kicks|burns) me\b",
        r"\b(being|been|am|was|get|getting) (abused|bullied|molested|beaten)\b",
        r"\btouch(es|ed)? me (inappropriately|where)\b",
        r"\bafraid to go home\b",
    ],
    "prompt_injection": [
        r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|your|the)\b.{0,20}"
        r"\b(instructions?|rules|prompt|directions)\b",
        r"\b(reveal|show|print|repeat|tell me|what (is|are))\b.{0,30}"
        r"\b(system prompt|your (instructions|rules|prompt))\b",
        r"\byou are (now|no longer)\b.{0,40}\b(not a tutor|unrestricted|jailbroken|dan|evil)\b",
        r"\b(jailbreak|developer mode|do anything now)\b",
        r"^\s*(system|assistant)\s*:",
        r"<\|im_start\|>|\[/?INST\]|<</?SYS>>",
    ],
}

OUTPUT_RULES: dict[str, list[str]] = {
    "unsafe_output": [
        r"\b(how to|steps to|ways to) (kill|hurt|harm) (yourself|myself|someone)\b",
        r"\b(fuck|shit|bitch|cunt|motherfucker)\w*\b",
    ],
}

SAFE_REPLIES = {
    "self_harm": (
        "I'm really sorry you're feeling this way. You deserve support from a person right now. "
        "Please talk to someone you trust — a teacher, school counsellor, or family member — or contact "
        "your local emergency number or a crisis line. I've let your teacher know so someone can check in with you."
    ),
    "abuse": (
        "Thank you for telling me. What you describe matters, and it is not your fault. Please talk to a "
        "teacher, school counsellor or another adult you trust as soon as you can. If you are in danger, "
        "call your local emergency number. I've let your teacher know so someone can help."
    ),
    "prompt_injection": (
        "I'm your course tutor, and I keep to the instructions your teachers set. "
        "Ask me anything about the course and I'll gladly help."
    ),
    "instructions_leak": "I can't share my setup, but I'm happy to help with the course. What are you working on?",
    "unsafe_output": "I can't help with that, but I'm happy to help with the course. What are you working on?",
}

FLAG_REASONS = {
    "self_harm": "The student may be at risk of self-harm.",
    "abuse": "The student may be describing abuse or bullying.",
    "prompt_injection": "The student tried to override the tutor's instructions.",
    "instructions_leak": "The tutor's reply repeated its instructions; it was withheld.",
    "unsafe_output": "The tutor's reply contained unsafe content; it was withheld.",
}


@dataclass(frozen=True)
class Verdict:
    category: str
    safe_reply: str
    flag_reason: str


@cache
def _compiled(rules_key: str) -> list[tuple[str, re.Pattern]]:
    base = INPUT_RULES if rules_key == "input" else OUTPUT_RULES
    extra = getattr(settings, f"GUARDRAILS_EXTRA_{rules_key.upper()}_RULES", {}) or {}
    merged: dict[str, list[str]] = {category: list(patterns) for category, patterns in base.items()}
    for category, patterns in extra.items():
        merged.setdefault(category, []).extend(patterns)
    return [
        (category, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
        for category, patterns in merged.items()
        for pattern in patterns
    ]


def _verdict(category: str) -> Verdict:
    return Verdict(
        category=category,
        safe_reply=SAFE_REPLIES.get(category, SAFE_REPLIES["unsafe_output"]),
        flag_reason=FLAG_REASONS.get(category, f"Matched the {category} rule."),
    )


def screen_input(text: str) -> Verdict | None:
    """The first rule the student's message trips, or None."""
    for category, pattern in _compiled("input"):
        if pattern.search(text):
            return _verdict(category)
    return None


def screen_output(text: str, *, system_prompt: str) -> Verdict | None:
    """The first rule the tutor's reply trips, or None. A reply quoting a long stretch
    of the system prompt counts as leaking it."""
    for category, pattern in _compiled("output"):
        if pattern.search(text):
            return _verdict(category)
    if _quotes(text, system_prompt):
        return _verdict("instructions_leak")
    return None


STREAM_TAIL_CHARS = 400


def screen_output_tail(text: str, *, system_prompt: str) -> Verdict | None:
    """`screen_output` for a reply being streamed, run after every new piece.

    Any new match must end in the newest piece, so only the tail is screened (from a word
    boundary): per-piece cost stays constant instead of growing with the reply. Output
    rules are short; the whole reply is screened again once complete.
    """
    if len(text) > STREAM_TAIL_CHARS:
        tail = text[-STREAM_TAIL_CHARS:]
        text = tail[tail.find(" ") + 1 :] if " " in tail else tail
    return screen_output(text, system_prompt=system_prompt)


def _quotes(text: str, source: str, window: int = 60) -> bool:
    normalized_text = " ".join(text.split()).lower()
    normalized_source = " ".join(source.split()).lower()
    if len(normalized_source) < window:
        return False
    return any(
        normalized_source[start : start + window] in normalized_text
        for start in range(0, len(normalized_source) - window + 1, window // 2)
    )


def clear_cache() -> None:
    """Forget compiled rules (after settings change, e.g. in tests)."""
    _compiled.cache_clear()

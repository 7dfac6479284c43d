"""Prometheus metrics of the model serving (adapter loads, switches and unloads), exposed by the
app's /metrics for what web processes did, and by each Celery worker's own metrics port
(WORKER_METRICS_PORT) for what its tasks did (a training job's promotion, a retired version's unload).

Event counts live in the process that saw them: prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by deploy/start-web.sh and start-worker.sh) adds up the processes
of one web server or one worker; see docs/operations.md.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter, Histogram

ADAPTER_LOADS = Counter(
    "tutor_adapter_loads",
    "Adapter loads asked of the model server, by outcome (loaded: vLLM has it now; failed: refused or unreachable).",
    ["outcome"],
)
ADAPTER_LOAD_SECONDS = Histogram(
    "tutor_adapter_load_seconds",
    "Time an adapter load took, for loads that succeeded.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
ADAPTER_SWITCHES = Counter(
    "tutor_adapter_switches",
    "Changes of the version serving a course, by kind (promotion, rollback).",
    ["kind"],
)
ADAPTER_UNLOADS = Counter(
    "tutor_adapter_unloads",
    "Retired adapter versions unloaded from the replicas, by outcome (unloaded, or failed: left loaded).",
    ["outcome"],
)
F = TypeVar("F", bound=Callable)

for _outcome in ("loaded", "failed"):
    ADAPTER_LOADS.labels(outcome=_outcome)  # every series exists from the start, at 0
for _outcome in ("unloaded", "failed"):
    ADAPTER_UNLOADS.labels(outcome=_outcome)
for _kind in ("promotion", "rollback"):
    ADAPTER_SWITCHES.labels(kind=_kind)


def load_measured(load: F) -> F:
    """Counts each call of the adapter-loading function it wraps, and times those that succeed."""

    @functools.wraps(load)
    def measured(*args, **kwargs):
        started = time.monotonic()
        try:
            result = load(*args, **kwargs)
        except Exception:
            ADAPTER_LOADS.labels(outcome="failed").inc()
            raise
        ADAPTER_LOADS.labels(outcome="loaded").inc()
        ADAPTER_LOAD_SECONDS.observe(time.monotonic() - started)
        return result

    return measured  # type: ignore[return-value]

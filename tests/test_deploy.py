"""deploy/: start-web.sh serves the app with production settings behind a TLS proxy (with its
monitoring endpoints reachable on the private port), the systemd units supervise the web app, the
model-server replicas and the Celery workers, and the Prometheus configuration scrapes the app and
each vLLM replica."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.test_demo import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.live
def test_start_web_serves_production_settings(tmp_path):
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DEVLMS_ENABLED", "ALLOWED_HOSTS"}
    }
    env.update(
        DJANGO_DEBUG="0",
        PUBLIC_BASE_URL="https://tutor.school.edu",
        SECRET_KEY="s" * 60,
        PSEUDONYM_SECRET="p" * 40,
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        REDIS_URL="",
        STATIC_ROOT=str(tmp_path / "static"),
        TRUST_X_FORWARDED_PROTO="1",
        WEB_PORT=str(port),
        WEB_WORKERS="1",
        TUTOR_VAR_DIR=str(tmp_path / "var"),
        PYTHON=str(ROOT / ".venv/bin/python"),
    )
    process = subprocess.Popen(
        [str(ROOT / "deploy/start-web.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    headers = {"Host": "tutor.school.edu", "X-Forwarded-Proto": "https"}
    try:
        for _ in range(120):
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", headers=headers, timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("start-web.sh did not come up")
        assert health.status_code == 200
        jwks = requests.get(f"http://127.0.0.1:{port}/lti/jwks/", headers=headers)
        assert jwks.status_code == 200 and jwks.json() == {"keys": []}
        # No development LMS in production, and plain http is redirected to https.
        assert requests.get(f"http://127.0.0.1:{port}/devlms/", headers=headers).status_code == 404
        insecure = requests.get(
            f"http://127.0.0.1:{port}/healthz", headers={"Host": "tutor.school.edu"}, allow_redirects=False
        )
        assert insecure.status_code == 301 and insecure.headers["Location"].startswith("https://tutor.school.edu/")
        assert (tmp_path / "static" / "admin").is_dir()  # collectstatic ran
        # Monitoring reaches the app's own port over plain http (no redirect), from an allowed
        # network (127.0.0.1 by default); the metrics of every worker come from the multiprocess files.
        direct = {"Host": "tutor.school.edu"}
        health = requests.get(f"http://127.0.0.1:{port}/health/", headers=direct, allow_redirects=False)
        assert health.status_code == 200 and health.json()["components"]["database"] == {"status": "ok"}
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", headers=direct, allow_redirects=False)
        assert metrics.status_code == 200 and 'tutor_chat_replies_total{mode="stream",outcome="complete"} 0.0' in (
            metrics.text
        )
        assert list((tmp_path / "var" / "prometheus").glob("counter_*.db"))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file's settings: section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in (ROOT / "deploy" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return sections


@pytest.mark.parametrize("name", ["ai-tutor-model@.service", "ai-tutor-worker@.service", "ai-tutor-web.service"])
def test_systemd_units_restart_what_dies_within_limits(name):
    settings = unit(name)
    service = settings["Service"]
    assert service["Restart"][0] in {"always", "on-failure"}
    assert service["User"] == ["ai-tutor"] and service["EnvironmentFile"] == ["/etc/ai-tutor/env"]
    for command in service["ExecStart"] + service.get("ExecStartPost", []):
        script = ROOT / command.split()[0].removeprefix("/opt/ai-tutor/")
        assert script.is_file() and os.access(script, os.X_OK), command
    if name != "ai-tutor-web.service":
        # Restarts are spaced and bounded: no tight loop when something cannot start.
        assert int(service["RestartSec"][0]) >= 5
        assert int(settings["Unit"]["StartLimitBurst"][0]) >= 3 and settings["Unit"]["StartLimitIntervalSec"]
        assert service["TimeoutStopSec"] and service["LimitNOFILE"] and service["TasksMax"]
        assert service["ExecStart"][0].endswith(" %i")  # one instance per replica port / worker kind


def test_units_pass_systemd_analyze_verify(tmp_path):
    """systemd's own parser reads every unit without a complaint (a misspelt key or value)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian: apt-get install systemd)")
    for path in (ROOT / "deploy").glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/ai-tutor", str(ROOT)))
    for instance in ["ai-tutor-model@8001", "ai-tutor-worker@default", "ai-tutor-worker@gpu0", "ai-tutor-web"]:
        result = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / f"{instance}.service")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line]
        assert not complaints, complaints


def test_the_model_unit_serves_its_instance_port(tmp_path):
    """ai-tutor-model@8002 runs `start-model.sh 8002`: vLLM on port 8002."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DJANGO_DEBUG": "1",
        "TUTOR_VAR_DIR": str(tmp_path),
        "MODEL_PATH": "/models/Mixtral-8x7B-Instruct-v0.1",
        "MODEL_CHAT_TEMPLATE": str(ROOT / "serving/chat_templates/mistral_instruct.jinja"),
        "PYTHON": str(ROOT / ".venv/bin/python"),
    }
    printed = subprocess.run(
        [str(ROOT / "deploy/start-model.sh"), "8002", "--print"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r" --port 8002 ", printed) and "--enable-lora" in printed, printed


def test_the_worker_script_starts_each_instance_the_units_name():
    script = (ROOT / "deploy/start-worker.sh").read_text()
    for instance in ("default", "gpu", "gpu[0-9]*", "beat"):
        assert re.search(rf"^  {re.escape(instance)}\)", script, re.M), instance


def test_prometheus_scrapes_the_app_and_every_vllm_replica():
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    app, vllm = jobs["ai-tutor"], jobs["vllm"]
    assert app["metrics_path"] == vllm["metrics_path"] == "/metrics"
    assert app["authorization"]["type"] == "Bearer" and app["authorization"]["credentials_file"]
    assert len(vllm["static_configs"][0]["targets"]) >= 2  # one target per replica
    assert jobs["ai-tutor-workers"]["static_configs"][0]["targets"]  # each worker's WORKER_METRICS_PORT

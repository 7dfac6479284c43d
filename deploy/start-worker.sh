#!/usr/bin/env bash
# Celery workers and the schedule, from the same environment file as the web server:
#
#   deploy/start-worker.sh default   # light tasks (retention, safety escalations, scheduled retraining), any host
#   deploy/start-worker.sh gpu       # training jobs: one per GPU at a time; run one per GPU
#                                    # (CUDA_VISIBLE_DEVICES=N) on hosts with the model stack
#   deploy/start-worker.sh gpu1      # the same for GPU 1 (sets CUDA_VISIBLE_DEVICES=1)
#   deploy/start-worker.sh beat      # the periodic schedule: exactly one in the whole install
#
# The broker is CELERY_BROKER_URL (Redis or RabbitMQ; see docs/configuration.md). Training
# tasks are acknowledged late and requeued if their worker dies; a job's database row decides
# whether a redelivered task resumes it (from its last checkpoint) or does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# The metrics of this worker's processes (its pool, a training child), which its main process
# serves on WORKER_METRICS_PORT when set (config.metrics.worker_metrics_serve): a multiprocess
# directory of its own (never the web server's, which start-web.sh empties), emptied at start.
export PROMETHEUS_MULTIPROC_DIR="${TUTOR_VAR_DIR:-var}/prometheus-worker-${1:-none}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -type f -delete
case "${1:-}" in
  default) exec "$PY" -m celery -A config worker -Q default -c "${WORKER_CONCURRENCY:-2}" -n "default@%h" --loglevel INFO ;;
  gpu) exec "$PY" -m celery -A config worker -Q gpu -c 1 --prefetch-multiplier 1 -n "gpu${CUDA_VISIBLE_DEVICES:-}@%h" --loglevel INFO ;;
  gpu[0-9]*)  # gpuN: the worker of GPU N (systemd's ai-tutor-worker@gpuN)
    export CUDA_VISIBLE_DEVICES=${1#gpu}
    exec "$PY" -m celery -A config worker -Q gpu -c 1 --prefetch-multiplier 1 -n "$1@%h" --loglevel INFO ;;
  beat) exec "$PY" -m celery -A config beat --loglevel INFO -s "${TUTOR_VAR_DIR:-var}/celerybeat-schedule" ;;
  *) echo "usage: $0 default|gpu|gpuN|beat" >&2; exit 2 ;;
esac

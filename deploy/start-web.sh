#!/usr/bin/env bash
# Production web server: migrate, collect static files, serve the ASGI app with uvicorn.
#
#   set -a; . /etc/ai-tutor/env; set +a     # see deploy/env.example
#   deploy/start-web.sh
#
# Put it behind a TLS-terminating reverse proxy (nginx, Caddy) that forwards
# X-Forwarded-Proto, and set TRUST_X_FORWARDED_PROTO=1. WEB_WORKERS (default 2)
# and WEB_PORT (default 8000) tune it. The app listens on 127.0.0.1 unless
# WEB_HOST says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" manage.py migrate --no-input
"$PY" manage.py collectstatic --no-input -v0
# Prometheus metrics of every uvicorn worker, added up at each scrape (config/metrics.py): the
# multiprocess mode's files, emptied at start as prometheus-client requires.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-${TUTOR_VAR_DIR:-var}/prometheus}
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -type f -delete
exec "$PY" -m uvicorn config.asgi:application \
  --host "${WEB_HOST:-127.0.0.1}" --port "${WEB_PORT:-8000}" \
  --workers "${WEB_WORKERS:-2}" --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}"

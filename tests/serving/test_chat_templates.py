"""The project's chat templates match each model family's reference prompt exactly."""

from __future__ import annotations

import re

import pytest
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from transformers.utils.chat_template_utils import render_jinja_template

from serving.chat_templates import TEMPLATE_DIR

pytestmark = [pytest.mark.fast]

MISTRAL = (TEMPLATE_DIR / "mistral_instruct.jinja").read_text()
CHATML = (TEMPLATE_DIR / "chatml.jinja").read_text()

CONVERSATIONS = [
    [{"role": "user", "content": "What is a ratio?"}],
    [
        {"role": "system", "content": "You are a maths tutor.\nBe brief."},
        {"role": "user", "content": "What is 1/2 + 1/4?"},
    ],
    [
        {"role": "system", "content": "Guide, do not tell."},
        {"role": "user", "content": "Solve 2x = 6"},
        {"role": "assistant", "content": "What could you divide both sides by?"},
        {"role": "user", "content": "By 2? So x = 3."},
    ],
]

_MISTRAL_MESSAGE = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


def render(template: str, messages: list[dict], **tokens) -> str:
    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=template, add_generation_prompt=True, **tokens
    )
    return rendered[0]


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["no system", "system", "multi-turn"])
def test_mistral_template_tokenizes_exactly_like_mistral_common(messages):
    """mistral-common's Mixtral 8x7B (v1) tokenizer is the reference Mixtral-Instruct prompt."""
    tokenizer = MistralTokenizer.v1()
    reference = tokenizer.encode_chat_completion(
        ChatCompletionRequest(messages=[_MISTRAL_MESSAGE[m["role"]](content=m["content"]) for m in messages])
    ).tokens
    raw = tokenizer.instruct_tokenizer.tokenizer
    ours: list[int] = []
    for part in re.split(r"(<s>|</s>)", render(MISTRAL, messages, bos_token="<s>", eos_token="</s>")):
        if part == "<s>":
            ours.append(raw.bos_id)
        elif part == "</s>":
            ours.append(raw.eos_id)
        elif part:
            ours += raw.encode(part, bos=False, eos=False)
    assert ours == reference


def test_mistral_template_folds_the_system_prompt_into_the_first_turn():
    text = render(MISTRAL, CONVERSATIONS[2], bos_token="<s>", eos_token="</s>")
    assert text == (
        "<s>[INST] Guide, do not tell.\n\nSolve 2x = 6 [/INST] What could you divide both sides by?</s>"
        "[INST] By 2? So x = 3. [/INST]"
    )


def test_mistral_template_refuses_roles_that_do_not_alternate():
    with pytest.raises(Exception, match="alternate"):
        render(
            MISTRAL,
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            bos_token="<s>",
            eos_token="</s>",
        )


def test_chatml_template_matches_smollm2_own_template_when_a_system_prompt_is_given():
    from serving.demo_model import gguf_path  # noqa: F401  (the package is installed with the model stack)

    smollm2 = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    for messages in CONVERSATIONS[1:]:
        assert render(CHATML, messages) == render(smollm2, messages)


def test_templates_mark_the_tutor_turns_for_training():
    """{% generation %} marks exactly the assistant content (+ end token), so loss falls on the tutor only."""
    rendered, masks = render_jinja_template(
        conversations=[CONVERSATIONS[2]], chat_template=CHATML, return_assistant_tokens_mask=True
    )
    text, (start, end) = rendered[0], masks[0][0]
    assert text[start:end] == "What could you divide both sides by?<|im_end|>"


def test_production_serves_mixtral_with_the_mistral_template_and_the_lora_flags():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEBUG", "DEVLMS_ENABLED", "MODEL_PATH"}}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        SECRET_KEY="s" * 60,
        PSEUDONYM_SECRET="p" * 40,
        PUBLIC_BASE_URL="https://tutor.school.edu",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "model_server", "--print"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[command.index("--model") + 1] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert command[command.index("--chat-template") + 1].endswith("mistral_instruct.jinja")
    assert command[command.index("--host") + 1] == "127.0.0.1"  # a private address by default
    for flag in ("--enable-lora", "--max-loras", "--max-lora-rank", "--max-cpu-loras", "--served-model-name"):
        assert flag in command


@pytest.mark.parametrize("template", ["chatml", "mistral"])
def test_a_turn_with_weight_zero_is_context_only(template):
    """mistral-finetune's "weight": 0 (a reply a teacher did not approve): rendered, but outside
    the generation markers, so no loss is taken on it; the text is the same as without weights."""
    source = CHATML if template == "chatml" else MISTRAL
    messages = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "It is 5.", "weight": 0},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Two and two make four."},
    ]
    rendered, masks = render_jinja_template(
        conversations=[messages],
        chat_template=source,
        return_assistant_tokens_mask=True,
        bos_token="<s>",
        eos_token="</s>",
    )
    text, spans = rendered[0], masks[0]
    trained = [text[start:end].removesuffix("</s>").removesuffix("<|im_end|>") for start, end in spans]
    assert trained == ["Two and two make four."]
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    assert (
        text
        == render_jinja_template(conversations=[unweighted], chat_template=source, bos_token="<s>", eos_token="</s>")[
            0
        ][0]
    )

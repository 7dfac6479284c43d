"""QLoRA's 4-bit path on a tiny random Mixtral, run on bitsandbytes' CPU backend: stock 4-bit
loading leaves the fused experts in bf16; the recipe makes them 4-bit, the model still computes
what the full-precision one does (within quantization error), and LoRA trains through it.
(The CUDA kernels themselves are measured on the lent GPU: bench/gpu_qlora.py, docs/benchmarks.md.)"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from serving.chat_templates import TEMPLATE_DIR
from tests.support.models import arithmetic_dataset, tiny_mixtral
from training.recipe import TrainConfig, base_model_load, run

pytestmark = [pytest.mark.real_model]


def storage_by_kind(model) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {"experts": set(), "attention": set()}
    for name, parameter in model.named_parameters():
        kind = "experts" if ".experts." in name else "attention" if ".self_attn." in name else None
        if kind:
            kinds[kind].add(type(parameter).__name__)
    return kinds


@pytest.fixture
def mixtral(tmp_path, demo_model):
    return tiny_mixtral(tmp_path / "mixtral", tokenizer_from=demo_model)


def test_stock_4bit_loading_leaves_the_fused_experts_unquantized(mixtral, tmp_path):
    # The risk this module exists for: if transformers starts quantizing fused experts itself,
    # this fails and training/moe_4bit.py can go. (In the load dtype: fp32 here, bf16 on CUDA.)
    stock = base_model_load(str(mixtral), quantize=True, cuda=False, quantize_experts=False)
    assert storage_by_kind(stock) == {"experts": {"Parameter"}, "attention": {"Params4bit"}}
    assert {p.dtype for n, p in stock.named_parameters() if ".experts." in n} == {torch.float32}


def test_the_recipe_makes_the_experts_4bit_and_they_compute_what_the_originals_do(mixtral, tmp_path):
    from transformers import AutoModelForCausalLM

    quantized = base_model_load(str(mixtral), quantize=True, cuda=False)
    assert storage_by_kind(quantized) == {"experts": {"Params4bit"}, "attention": {"Params4bit"}}
    reference = AutoModelForCausalLM.from_pretrained(mixtral, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    tokens, experts = 48, reference.config.num_local_experts
    hidden = torch.randn(tokens, reference.config.hidden_size, generator=generator)
    top_k_index = torch.stack([torch.randperm(experts, generator=generator)[:2] for _ in range(tokens)])
    top_k_weights = torch.softmax(torch.randn(tokens, 2, generator=generator), dim=-1)

    def relative_error(got, expected) -> float:
        return ((got.float() - expected).norm() / expected.norm()).item()

    for layer in range(reference.config.num_hidden_layers):
        with torch.no_grad():
            expected = reference.model.layers[layer].mlp.experts(hidden, top_k_index, top_k_weights)
            got = quantized.model.layers[layer].mlp.experts(hidden, top_k_index, top_k_weights)
            # The yardstick: bitsandbytes' own 4-bit q_proj against the original, on the same input.
            q_error = relative_error(
                quantized.model.layers[layer].self_attn.q_proj(hidden),
                reference.model.layers[layer].self_attn.q_proj(hidden),
            )
        # Two 4-bit matrix products in a row: about twice one product's error, not a different function
        # (an expert that computed nothing would be off by 1.0).
        error = relative_error(got, expected)
        assert error < 2.5 * q_error, (layer, error, q_error)
    ids = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        agree = (quantized(ids).logits.argmax(-1) == reference(ids).logits.argmax(-1)).float().mean().item()
    assert agree > 0.5, agree


def test_qlora_trains_attention_lora_through_4bit_experts(mixtral, tmp_path):
    train, held_out = arithmetic_dataset(tmp_path / "data", train=8, held_out=2)
    result = run(
        TrainConfig(
            base_model=str(mixtral),
            train_file=str(train),
            eval_file=str(held_out),
            output_dir=str(tmp_path / "adapter"),
            chat_template=str(TEMPLATE_DIR / "chatml.jinja"),
            max_steps=2,
            tokens_per_step=256,
            learning_rate=1e-2,
            quantize_4bit=True,
        )
    )
    assert result.steps == 2 and result.eval_loss is not None
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as handle:
        lora_b = [handle.get_tensor(key) for key in handle.keys() if "lora_B" in key]
        keys = list(handle.keys())
    assert lora_b and all("experts" not in key for key in keys)
    assert any(tensor.abs().sum() > 0 for tensor in lora_b)  # B starts at zero: it moved, so gradients flowed

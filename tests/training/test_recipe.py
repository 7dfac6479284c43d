"""The LoRA recipe on CPU: a tiny random Mixtral (attention + expert LoRA, router loss),
checkpoint/resume on the demo model, and the CLI's settings reaching the adapter."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from serving.chat_templates import TEMPLATE_DIR
from tests.support.models import arithmetic_dataset, tiny_mixtral
from training.recipe import TrainConfig, TrainingStopped, main, run

CHATML = TEMPLATE_DIR / "chatml.jinja"  # the tiny Mixtral borrows SmolLM2's tokenizer, hence its template

pytestmark = [pytest.mark.real_model]


def adapter_keys(folder) -> list[str]:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as handle:
        return list(handle.keys())


@pytest.mark.parametrize("lora_experts", [False, True], ids=["attention", "attention+experts"])
def test_tiny_mixtral_trains_lora_with_the_router_loss_in_the_objective(tmp_path, demo_model, lora_experts):
    base = tiny_mixtral(tmp_path / "mixtral", tokenizer_from=demo_model)
    train, held_out = arithmetic_dataset(tmp_path / "data", train=8, held_out=2)
    logs: list[dict] = []
    result = run(
        TrainConfig(
            base_model=str(base),
            train_file=str(train),
            eval_file=str(held_out),
            output_dir=str(tmp_path / "adapter"),
            chat_template=str(CHATML),
            max_steps=2,
            tokens_per_step=256,
            lora_experts=lora_experts,
        ),
        on_log=logs.append,
    )
    keys = adapter_keys(tmp_path / "adapter")
    for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert any(f"self_attn.{projection}.lora_A" in key for key in keys), projection
    expert_keys = [key for key in keys if "experts" in key]
    assert bool(expert_keys) == lora_experts
    if lora_experts:
        # PEFT wraps each targeted parameter in turn (gate_up_proj, then down_proj): two LoRA pairs per layer.
        config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
        assert sorted(config["target_parameters"]) == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]
        for layer in (0, 1):
            assert len([key for key in expert_keys if f"layers.{layer}.mlp.experts" in key]) == 4
    aux = [line["aux_loss"] for line in logs if "aux_loss" in line]
    assert aux and all(value > 0 for value in aux)  # the router's load-balancing loss is in the objective
    assert result.steps == 2 and result.eval_loss is not None


def test_a_stopped_run_leaves_no_adapter_and_the_next_run_resumes(tmp_path, demo_model):
    train, held_out = arithmetic_dataset(tmp_path / "data", train=16, held_out=2)
    config = TrainConfig(
        base_model=str(demo_model),
        train_file=str(train),
        eval_file=str(held_out),
        output_dir=str(tmp_path / "adapter"),
        max_steps=4,
        tokens_per_step=256,
        save_steps=2,
        rank=4,
        lora_alpha=8,
    )
    with pytest.raises(TrainingStopped):
        run(config, should_stop=lambda: True)  # stops (and saves) after the first step
    assert not (tmp_path / "adapter").exists()
    assert not list(tmp_path.glob(".adapter.partial-*"))
    assert (tmp_path / "adapter.work" / "checkpoint-1").is_dir()

    result = run(config)
    assert result.resumed_from.endswith("checkpoint-1") and result.steps == 4
    saved = json.loads((tmp_path / "adapter" / "training_result.json").read_text())
    assert saved["steps"] == 4 and saved["config"]["rank"] == 4
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_result.json",
    ]


def test_the_same_seed_gives_the_same_adapter(tmp_path, demo_model):
    import torch
    from safetensors.torch import load_file

    base = tiny_mixtral(tmp_path / "mixtral", tokenizer_from=demo_model)
    train, _ = arithmetic_dataset(tmp_path / "data", train=8, held_out=0)
    adapters = []
    for name in ("first", "second"):
        run(
            TrainConfig(
                base_model=str(base),
                train_file=str(train),
                output_dir=str(tmp_path / name),
                chat_template=str(CHATML),
                max_steps=2,
                tokens_per_step=256,
                seed=7,
            )
        )
        adapters.append(load_file(str(tmp_path / name / "adapter_model.safetensors")))
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][key], adapters[1][key]) for key in adapters[0])
    assert any(adapters[0][key].abs().sum() > 0 for key in adapters[0] if "lora_B" in key)  # it did train


def test_the_cli_trains_with_the_lora_alpha_it_is_given(tmp_path, demo_model):
    # PEFT scales the update by alpha / rank and vLLM serves it so: an alpha left at 2 x rank
    # would be a different adapter. 5 is no multiple of the rank, so no default can produce it.
    train, _ = arithmetic_dataset(tmp_path / "data", train=8, held_out=0)
    out = tmp_path / "adapter"
    paths = ["--base_model", str(demo_model), "--train_file", str(train), "--output_dir", str(out)]
    main([*paths, "--rank", "2", "--lora_alpha", "5", "--max_steps", "1", "--tokens_per_step", "256"])
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (2, 5)
    recorded = json.loads((out / "training_result.json").read_text())["config"]
    assert (recorded["rank"], recorded["lora_alpha"]) == (2, 5)

"""LoRA fine-tuning recipe for a course's tutor: TRL's SFTTrainer with a PEFT LoRA.

    python -m training.recipe --base MODEL --train FILE.jsonl [--eval FILE.eval.jsonl] --out ADAPTER_DIR \
        [--max-steps N] [--epochs N] [--rank 16] [--lora-experts] [--seed 0]

One typed config (`TrainConfig`), one linear path: setup → train → checkpoint → cleanup.

* On a CUDA machine: QLoRA, the base model in 4-bit NF4 (bitsandbytes) with bf16 compute and
  gradient checkpointing; an MoE model's fused experts are made 4-bit too (training/moe_4bit.py),
  which bitsandbytes alone does not do. On a CPU: plain LoRA in fp32, so CI runs the same code
  (and `quantize_4bit=True` runs the 4-bit path there on bitsandbytes' CPU backend).
* Loss on the tutor's turns only: the project's chat template wraps assistant turns in
  `{% generation %}` (a turn with `"weight": 0` stays outside, as mistral-finetune does).
* Sequences are packed (best-fit decreasing, no cross-contamination: position ids restart).
* `max_length` comes from the data (the longest example, rounded up to 64), not TRL's 1024;
  the number of epochs follows the dataset size (clamp(10000 / examples, 1, 10)) unless set.
* Mixtral (and other MoE models): LoRA on the attention projections by default, with the
  router's load-balancing loss in the objective; `lora_experts` adds the fused expert weights
  (transformers 5: `mlp.experts.gate_up_proj` / `down_proj`, reached with `target_parameters`).
* Checkpoints every `save_steps` to `work_dir`; running again resumes from the last one.
  The final adapter is written to a temporary folder beside `output_dir` and renamed into
  place only when complete, so a half-written adapter never exists under its real name.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def epochs_for(examples: int) -> int:
    """Small datasets take more passes: clamp(10000 / examples, 1, 10)."""
    return max(1, min(10, round(10000 / max(examples, 1))))


@dataclass
class TrainConfig:
    base_model: str
    train_file: str
    output_dir: str
    eval_file: str | None = None
    work_dir: str | None = None  # checkpoints; default: OUTPUT_DIR.work
    chat_template: str | None = None  # default: the project's template for the base model
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_fraction: float = 0.1
    epochs: int | None = None  # None: epochs_for(number of training examples)
    max_steps: int = -1  # > 0 stops there (tests, smoke runs)
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_length: int | None = None  # None: the longest example, rounded up to 64
    target_modules: list[str] = field(default_factory=lambda: list(ATTENTION))
    lora_experts: bool = False  # MoE only: also adapt the fused expert weights (slower to serve)
    router_aux_loss_coef: float | None = None  # MoE only: None keeps the model's own (Mixtral: 0.02)
    packing: bool = True
    quantize_4bit: bool | None = None  # None: on CUDA
    quantize_experts: bool = True  # MoE in 4-bit: the fused experts too (training/moe_4bit.py); off leaves them bf16
    gradient_checkpointing: bool | None = None  # None: on CUDA
    save_steps: int = 25
    eval_steps: int | None = None  # None: evaluate at each save
    seed: int = 0

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir or f"{self.output_dir}.work")


@dataclass
class TrainResult:
    adapter_dir: str
    steps: int
    epochs: int
    max_length: int
    train_examples: int
    train_loss: float | None
    eval_loss: float | None
    train_tokens: int
    seconds: float
    resumed_from: str | None


class TrainingStopped(Exception):
    """Training was asked to stop; the last checkpoint was saved and a rerun resumes from it."""


def _progress_callback(on_log, should_stop, stopped: list):
    """A TrainerCallback that reports each log line and lets the caller stop training."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_log and logs:
                on_log({"step": state.global_step, "max_steps": state.max_steps, **logs})

        def on_step_end(self, args, state, control, **kwargs):
            if should_stop and should_stop():
                stopped.append(state.global_step)
                control.should_training_stop = True
                control.should_save = True

    return Progress()


def _longest_example(tokenizer, rows: list[dict]) -> int:
    longest = 0
    for row in rows:
        plain = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        ids = tokenizer.apply_chat_template(plain, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        longest = max(longest, len(ids))
    return longest


CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt")


def _last_complete_checkpoint(work: Path) -> str | None:
    """The newest checkpoint with everything a resume needs. A process killed while saving leaves
    a partial one (the Trainer would pick it and fail): those are removed."""
    if not work.exists():
        return None
    checkpoints = sorted(
        (p for p in work.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in checkpoints:
        if all((checkpoint / name).exists() for name in CHECKPOINT_FILES):
            return str(checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def _read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _project_chat_template(base_model: str) -> str:
    from serving.chat_templates import chat_template_path

    return str(chat_template_path(Path(base_model)))


def base_model_load(base_model: str, *, quantize: bool, cuda: bool, quantize_experts: bool = True):
    """The base model for training and evaluation: fp32 on a CPU, bf16 on CUDA; with `quantize`,
    4-bit NF4 (bitsandbytes, bf16 compute, double quantization), an MoE model's fused experts
    included unless `quantize_experts` is off (bitsandbytes alone leaves them in bf16; see
    training/moe_4bit.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    load_kwargs: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if quantize:
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        load_kwargs["device_map"] = {"": 0 if cuda else "cpu"}  # CPU: bitsandbytes' CPU backend
    model = AutoModelForCausalLM.from_pretrained(base_model, **load_kwargs)
    if quantize and quantize_experts:
        from training.moe_4bit import experts_quantize

        experts_quantize(model, compute_dtype=torch.bfloat16)
    return model


def run(
    config: TrainConfig,
    *,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    started = time.monotonic()
    # -- setup --------------------------------------------------------------------------------------
    set_seed(config.seed)
    cuda = torch.cuda.is_available()
    quantize = cuda if config.quantize_4bit is None else config.quantize_4bit
    checkpointing = cuda if config.gradient_checkpointing is None else config.gradient_checkpointing

    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    tokenizer.chat_template = Path(config.chat_template or _project_chat_template(config.base_model)).read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows = _read_jsonl(config.train_file)
    eval_rows = _read_jsonl(config.eval_file) if config.eval_file else []
    if not train_rows:
        raise ValueError(f"{config.train_file} has no training examples")
    max_length = config.max_length or 64 * math.ceil(_longest_example(tokenizer, train_rows + eval_rows) / 64)
    epochs = config.epochs or epochs_for(len(train_rows))

    moe = hasattr(AutoConfig.from_pretrained(config.base_model), "output_router_logits")
    model = base_model_load(
        config.base_model,
        quantize=quantize,
        cuda=cuda,
        quantize_experts=config.quantize_experts and not config.lora_experts,  # expert LoRA needs them fused
    )
    if quantize:
        from peft import prepare_model_for_kbit_training

        # It casts every parameter that is not 4-bit to fp32: experts left in bf16 would double.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    experts = moe and config.lora_experts
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        # PEFT's LoRA on raw parameters (the fused experts) does not support dropout.
        lora_dropout=0.0 if experts else config.dropout,
        target_modules=list(config.target_modules),
        target_parameters=list(EXPERT_PARAMETERS) if experts else None,
        task_type="CAUSAL_LM",
    )
    steps_per_epoch = math.ceil(len(train_rows) / (config.batch_size * config.gradient_accumulation))
    total_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * epochs
    work = config.work_path
    sft_config = SFTConfig(
        output_dir=str(work),
        num_train_epochs=epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=math.ceil(total_steps * config.warmup_fraction),
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=config.eval_steps or config.save_steps,
        max_length=max_length,
        packing=config.packing,
        assistant_only_loss=True,
        gradient_checkpointing=checkpointing,
        bf16=cuda,
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        dataloader_num_workers=0,
        router_aux_loss_coef=config.router_aux_loss_coef if moe else None,
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_progress_callback(on_log, should_stop, stopped := [])],
    )

    # -- train ---------------------------------------------------------------------------------------
    resume = _last_complete_checkpoint(work)
    output = trainer.train(resume_from_checkpoint=resume)
    if stopped:
        raise TrainingStopped(f"stopped at step {stopped[0]}; checkpoints in {work}")
    eval_loss = trainer.evaluate()["eval_loss"] if eval_rows else None

    # -- checkpoint: the adapter, complete, renamed into place -------------------------------------------
    final = Path(config.output_dir)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    trainer.model.save_pretrained(str(staging))
    result = TrainResult(
        adapter_dir=str(final),
        steps=trainer.state.global_step,
        epochs=epochs,
        max_length=max_length,
        train_examples=len(train_rows),
        train_loss=output.training_loss,
        eval_loss=eval_loss,
        train_tokens=int(getattr(trainer, "_total_train_tokens", 0) or 0),
        seconds=round(time.monotonic() - started, 1),
        resumed_from=resume,
    )
    (staging / "training_result.json").write_text(json.dumps({"config": asdict(config), **asdict(result)}, indent=2))
    for name in os.listdir(staging):
        with open(staging / name, "rb") as handle:
            os.fsync(handle.fileno())
    missing = [name for name in ADAPTER_FILES if not (staging / name).exists()]
    if missing:
        raise RuntimeError(f"the adapter is incomplete (missing {missing}); nothing was renamed into place")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)

    # -- cleanup -------------------------------------------------------------------------------------
    del trainer, model
    gc.collect()
    if cuda:
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora-experts", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = TrainConfig(
        base_model=args.base,
        train_file=args.train,
        eval_file=args.eval,
        output_dir=args.out,
        max_steps=args.max_steps,
        epochs=args.epochs,
        rank=args.rank,
        alpha=2 * args.rank,
        batch_size=args.batch_size,
        lora_experts=args.lora_experts,
        seed=args.seed,
    )
    result = run(config, on_log=lambda line: print(json.dumps(line), flush=True))
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

"""LoRA fine-tuning recipe for a course's tutor: TRL's SFTTrainer with a PEFT LoRA.

    python -m training.recipe --base_model MODEL --train_file FILE.jsonl --output_dir ADAPTER_DIR \
        [--eval_file FILE.eval.jsonl] [--FIELD VALUE ...]

One typed config (`TrainConfig`) and named steps run in a line, as a torchtune recipe does:
`setup` (data, memory check, model, trainer) → `train` → `evaluate` → `save` (the adapter,
atomically) → `cleanup`; `run` calls them. The jobs call `run` from training/child.py.

The CLI has one flag per `TrainConfig` field, generated from the dataclass (transformers'
HfArgumentParser): the flag is the field's name (`--lora_alpha 32`; `--lora-alpha` works too),
its type and default are the field's, and `--help` lists them all with the fields' help. A
boolean is switched on by its bare flag and off by `--no_FIELD` (`--no_gradient_checkpointing`);
`--quantize_4bit true|false` (unset: on CUDA); a list takes several values
(`--target_modules q_proj v_proj`). Progress is printed as JSON lines, then the `TrainResult`.

* On a CUDA machine: QLoRA, the base model in 4-bit NF4 (bitsandbytes) with bf16 compute; an MoE
  model's fused experts are made 4-bit too (training/moe_4bit.py), which bitsandbytes alone does
  not do. On a CPU: plain LoRA in fp32, so CI runs the same code (and `quantize_4bit=True` runs
  the 4-bit path there on bitsandbytes' CPU backend).
* Memory is bounded by design: a step is one padding-free pack of at most `tokens_per_step`
  tokens (TRL's best-fit-decreasing packing, position ids restarting per example), so one long
  example costs its own length, not batch x longest. Activations are checkpointed (as TRL does by
  default), and the loss goes through TRL's fused LM head, which never holds the logits of the
  whole pack: on a CPU its tiles are set small here (`LOSS_TILE_*`), on CUDA it runs its Triton
  kernel on the trained positions only. `memory_estimate` predicts the peak before anything is
  loaded; `run` refuses a job that would not fit (`NotEnoughMemory`, with what to change).
* Time follows the data: `epochs` passes over the training tokens (1.5), at least
  `min_steps` and at most `step_budget` optimizer steps, evaluated `evals_per_epoch` times an
  epoch on the held-out file, stopping early when the held-out loss stops improving
  (`early_stopping_patience`); the best checkpoint is the adapter.
* Loss on the tutor's turns only: the project's chat template wraps assistant turns in
  `{% generation %}` (a turn with `"weight": 0` stays outside, as mistral-finetune does).
* Dense models: LoRA on every linear layer. Mixtral (and other MoE models): LoRA on the attention
  projections, with the router's load-balancing loss in the objective; `lora_experts` adds the
  fused expert weights (transformers 5: `mlp.experts.gate_up_proj` / `down_proj`, reached with
  `target_parameters`).
* Checkpoints at each evaluation to `work_dir`; running again resumes from the last complete one.
  The final adapter is written to a temporary folder beside `output_dir` and renamed into place
  only when complete, so a half-written adapter never exists under its real name.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.jsonl import jsonl_read

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
# TRL's fused LM head projects [tokens, vocabulary] tiles; its defaults (4,096 x 32,768) are sized
# for a GPU and cost gigabytes of fp32 temporaries on a CPU. These keep a tile near 32 MB there.
LOSS_TILE_TOKENS_CPU = 1024
LOSS_TILE_VOCAB_CPU = 8192


def option(default, doc: str):
    """A TrainConfig field with its default, and the help its CLI flag shows."""
    return field(default=default, metadata={"help": doc})


def required(doc: str):
    return field(metadata={"help": doc})


@dataclass
class TrainConfig:
    """Everything a run does, and nothing else: the CLI's flags are generated from these fields."""

    base_model: str = required("the base model's folder (Hugging Face format)")
    train_file: str = required("training examples, JSONL of {'messages': [...]}")
    output_dir: str = required("where the finished adapter is written")
    eval_file: str | None = option(None, "held-out examples (JSONL); none: no evaluation, no early stopping")
    work_dir: str | None = option(None, "checkpoints; none: OUTPUT_DIR.work")
    chat_template: str | None = option(None, "a Jinja chat template; none: the project's for the base model")
    # -- the adapter
    rank: int = option(16, "LoRA rank")
    lora_alpha: int | None = option(None, "LoRA alpha (the update is scaled by alpha / rank); none: 2 x rank")
    dropout: float = option(0.05, "LoRA dropout")
    target_modules: list[str] | None = option(  # noqa: RUF009 - option() is dataclasses.field()
        None, "modules to adapt; none: every linear layer (dense models) or the attention (MoE)"
    )
    lora_experts: bool = option(False, "MoE only: also adapt the fused expert weights (slower to serve)")
    router_aux_loss_coef: float | None = option(
        None, "MoE only: the router's load-balancing loss weight; none: the model's own (Mixtral: 0.02)"
    )
    # -- the schedule
    learning_rate: float = option(2e-4, "peak learning rate")
    lr_scheduler: str = option("cosine", "transformers' scheduler name")
    warmup_fraction: float = option(0.1, "warmup, as a fraction of the steps")
    tokens_per_step: int = option(512, "one optimizer step: a padding-free pack of at most this many tokens")
    epochs: float = option(1.5, "passes over the training tokens...")
    min_steps: int = option(20, "...but at least this many steps (small courses: smaller packs, not fewer steps)")
    step_budget: int = option(2000, "...and at most this many (large courses)")
    max_steps: int = option(-1, "> 0: exactly this many steps, no early stopping (tests, smoke runs)")
    evals_per_epoch: int = option(2, "held-out evaluations (each with a checkpoint) an epoch")
    early_stopping_patience: int = option(2, "evaluations without a better held-out loss; 0: never stop early")
    gradient_accumulation: int = option(1, "packs an optimizer step")
    # -- the machine
    quantize_4bit: bool | None = option(None, "QLoRA: the base model in 4-bit NF4; none: on CUDA")
    quantize_experts: bool = option(
        True, "MoE in 4-bit: the fused experts too (training/moe_4bit.py); off leaves them bf16"
    )
    gradient_checkpointing: bool = option(True, "recompute activations in the backward pass")
    memory_limit_mb: int | None = option(None, "the preflight's bound; none: what the machine has free")
    check_memory: bool = option(True, "refuse a run whose estimated peak does not fit")
    save_steps: int | None = option(None, "steps between checkpoints; none: at each evaluation (else 25)")
    seed: int = option(0, "seed of the LoRA's initialization and the data order")

    def __post_init__(self) -> None:
        if self.lora_alpha is None:  # resolved here so that the recorded config says what was used
            self.lora_alpha = 2 * self.rank

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir or f"{self.output_dir}.work")


@dataclass(frozen=True)
class Schedule:
    """What a run will do, from the data's token counts alone (the export's estimate uses it too)."""

    steps: int
    tokens_per_step: int  # the pack size actually used
    epochs: float
    eval_every: int  # steps between evaluations (0: no held-out file)
    train_tokens: int


def schedule_for(config: TrainConfig, *, lengths: list[int], held_out: bool) -> Schedule:
    """Steps follow the tokens: `epochs` passes at `tokens_per_step` a step, within [min_steps,
    step_budget]. A course too small for `min_steps` full packs gets smaller packs (never smaller
    than its longest example) rather than more passes."""
    train_tokens = sum(lengths)
    longest = max(lengths, default=1)
    pack = max(1, config.tokens_per_step)
    if config.max_steps <= 0 and math.ceil(config.epochs * train_tokens / pack) < config.min_steps:
        pack = max(64 * math.ceil(longest / 64), math.ceil(config.epochs * train_tokens / config.min_steps))
    pack = max(pack, longest)
    if config.max_steps > 0:
        steps = config.max_steps
    else:
        steps = min(config.step_budget, max(config.min_steps, math.ceil(config.epochs * train_tokens / pack)))
    packs_per_epoch = max(1, math.ceil(train_tokens / pack))
    eval_every = max(1, round(packs_per_epoch / max(config.evals_per_epoch, 1))) if held_out else 0
    return Schedule(
        steps=steps,
        tokens_per_step=pack,
        epochs=round(steps / packs_per_epoch, 2),
        eval_every=min(eval_every, steps) if held_out else 0,
        train_tokens=train_tokens,
    )


# -- memory -------------------------------------------------------------------------------------------

# Measured on this project's CPU kind with SmolLM2-135M (docs/benchmarks.md): the Python process
# with torch, transformers, PEFT, TRL and datasets imported, before any model.
RUNTIME_BYTES = 650 * 2**20
# Activations per packed token with gradient checkpointing: each layer's saved input (hidden
# floats) plus one layer's recomputed activations, and the loss tile; fitted on the same runs.
ACTIVATION_FLOATS_PER_LAYER_TOKEN = 2
RECOMPUTE_FLOATS_PER_TOKEN = 24  # x (hidden + intermediate) of the layer being recomputed


class NotEnoughMemory(Exception):
    """The job would not fit in memory; the message says by how much and what to change."""


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int
    parts: dict

    def gib(self) -> str:
        return f"{self.peak_bytes / 2**30:.1f} GiB"


def _safetensors_parameters(folder: Path) -> int:
    """Parameters in a model folder's safetensors files, read from their headers (no weights loaded)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                total += math.prod(entry["shape"])
    return total


def memory_estimate(config: TrainConfig, *, tokens_per_step: int, cuda: bool, quantize: bool) -> MemoryEstimate:
    """Peak memory of a run (process RAM on a CPU, GPU memory on CUDA) before anything is loaded:
    weights, LoRA with its gradients and Adam state, checkpointed activations of one pack, the loss tile."""
    model_config = json.loads((Path(config.base_model) / "config.json").read_text())
    text = model_config.get("text_config", model_config)
    hidden = int(text.get("hidden_size", 4096))
    layers = int(text.get("num_hidden_layers", 32))
    intermediate = int(text.get("intermediate_size", 4 * hidden))
    parameters = _safetensors_parameters(Path(config.base_model)) or 12 * layers * hidden * hidden
    weight_bytes = parameters * (0.55 if quantize else (2 if cuda else 4))
    # LoRA on every linear layer of a dense model: about 7 projections of (in + out) x rank a layer.
    lora_parameters = layers * 7 * (hidden + intermediate) * config.rank
    lora_bytes = lora_parameters * 4 * 4  # fp32 weights, gradients, two Adam moments
    floats = tokens_per_step * (
        layers * hidden * ACTIVATION_FLOATS_PER_LAYER_TOKEN
        + (hidden + intermediate) * RECOMPUTE_FLOATS_PER_TOKEN * (1 if config.gradient_checkpointing else layers)
    )
    activation_bytes = floats * (2 if cuda else 4)
    tile_bytes = 0 if cuda else 4 * LOSS_TILE_TOKENS_CPU * LOSS_TILE_VOCAB_CPU * 4
    runtime = 0 if cuda else RUNTIME_BYTES
    parts = {
        "runtime": runtime,
        "weights": int(weight_bytes),
        "lora_and_optimizer": int(lora_bytes),
        "activations": int(activation_bytes),
        "loss_tiles": tile_bytes,
    }
    return MemoryEstimate(peak_bytes=int(sum(parts.values())), parts=parts)


def memory_available(*, cuda: bool) -> int:
    """Bytes this run may use: free GPU memory on CUDA; on a CPU, what the kernel reports
    available (MemAvailable), bounded by the memory cgroup's limit when one applies."""
    if cuda:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path(limit_file).read_text().strip())
            if limit < 2**60:
                available = min(available, limit - int(Path(usage_file).read_text().strip()))
    return max(int(available), 0)


def memory_check(config: TrainConfig, *, schedule: Schedule, cuda: bool, quantize: bool) -> MemoryEstimate:
    estimate = memory_estimate(config, tokens_per_step=schedule.tokens_per_step, cuda=cuda, quantize=quantize)
    if not config.check_memory:
        return estimate
    where = "GPU memory" if cuda else "memory"
    free = memory_available(cuda=cuda)
    limit = free if config.memory_limit_mb is None else min(free, config.memory_limit_mb * 2**20)
    if estimate.peak_bytes > limit:
        fixed = estimate.peak_bytes - estimate.parts["activations"]
        per_token = estimate.parts["activations"] / schedule.tokens_per_step
        fits = int((limit - fixed) / per_token) if limit > fixed else 0
        advice = (
            f"lower TRAINING_TOKENS_PER_STEP to {fits // 64 * 64} or less"
            if fits >= 64
            else "use a smaller base model or a machine with more memory"
        )
        parts = ", ".join(f"{k.replace('_', ' ')} {v / 2**30:.2f}" for k, v in estimate.parts.items() if v)
        raise NotEnoughMemory(
            f"This training needs about {estimate.gib()} of {where} ({parts} GiB) "
            f"but {limit / 2**30:.1f} GiB is available"
            + (f" (TRAINING_MEMORY_LIMIT_MB={config.memory_limit_mb})" if config.memory_limit_mb else "")
            + f": {advice}."
        )
    return estimate


@dataclass
class TrainResult:
    adapter_dir: str
    steps: int
    epochs: float
    max_length: int
    train_examples: int
    train_loss: float | None
    eval_loss: float | None
    train_tokens: int
    seconds: float
    resumed_from: str | None
    stopped_early: bool = False
    best_step: int | None = None
    train_seconds: float | None = None
    tokens_per_second: float | None = None  # training, evaluations left out
    eval_tokens_per_second: float | None = None
    memory_estimate_bytes: int | None = None


class TrainingStopped(Exception):
    """Training was asked to stop; the last checkpoint was saved and a rerun resumes from it."""


def _progress_callback(on_log, should_stop, stopped: list, clock: dict):
    """A TrainerCallback that reports each log line, with the throughput measured so far (the
    first step, which warms up, left out), and lets the caller stop training."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["begin"] = time.monotonic()
            clock["first_step"] = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            if state.global_step == clock["first_step"] + 1:
                clock["warm"] = (now, state.global_step)
            clock["last"] = (now, state.global_step)
            if should_stop and should_stop():
                stopped.append(state.global_step)
                control.should_training_stop = True
                control.should_save = True

        def on_evaluate(self, args, state, control, **kwargs):
            clock.setdefault("evals", []).append(time.monotonic())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not (on_log and logs):
                return
            line = {"step": state.global_step, "max_steps": state.max_steps, **logs}
            seconds_per_step = _seconds_per_step(clock)
            if seconds_per_step:
                line["seconds_per_step"] = round(seconds_per_step, 3)
            if clock.get("eval_seconds"):
                line["eval_seconds"] = round(clock["eval_seconds"], 2)
            line["eval_every"] = args.eval_steps or 0
            on_log(line)

    return Progress()


def _seconds_per_step(clock: dict) -> float | None:
    """Training seconds a step since the first (warm-up) step, evaluations excluded."""
    if "warm" not in clock or clock["last"][1] <= clock["warm"][1]:
        return None
    (t0, s0), (t1, s1) = clock["warm"], clock["last"]
    evals = [t for t in clock.get("evals", []) if t0 < t <= t1]
    eval_seconds = len(evals) * clock.get("eval_seconds", 0.0)
    return max(t1 - t0 - eval_seconds, 1e-6) / (s1 - s0)


def example_lengths(tokenizer, rows: list[dict]) -> list[int]:
    """Tokens of each example under the training chat template."""
    lengths = []
    for row in rows:
        plain = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        ids = tokenizer.apply_chat_template(plain, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        lengths.append(len(ids))
    return lengths


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


def _project_chat_template(base_model: str) -> str:
    from serving.chat_templates import chat_template_path

    return str(chat_template_path(Path(base_model)))


def is_moe(base_model: str) -> bool:
    model_config = json.loads((Path(base_model) / "config.json").read_text())
    text = model_config.get("text_config", model_config)
    return "output_router_logits" in text or "num_local_experts" in text


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


def _loss_tiles(*, cuda: bool) -> None:
    """TRL's fused LM head reads its tile sizes from module constants at each call."""
    if cuda:
        return
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    kernel.TOKEN_CHUNK_SIZE = LOSS_TILE_TOKENS_CPU
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = LOSS_TILE_VOCAB_CPU


# -- the recipe: setup → train → evaluate → save → cleanup ---------------------------------------------


@dataclass
class Training:
    """What `setup` builds and the later steps use and fill in, in order."""

    config: TrainConfig
    started: float  # monotonic
    cuda: bool
    schedule: Schedule
    estimate: MemoryEstimate
    train_examples: int
    held_out: bool  # a held-out file with examples in it
    eval_lengths: list[int]
    early: bool  # early stopping on the held-out loss; the best checkpoint is the adapter
    trainer: object  # trl.SFTTrainer
    clock: dict  # filled by the progress callback and the evaluation timer
    stopped: list  # the step at which should_stop answered yes
    # -- set by train
    output: object = None  # transformers.TrainOutput
    resumed_from: str | None = None
    train_seconds: float = 0.0
    # -- set by evaluate
    eval_loss: float | None = None
    best_step: int | None = None


def run(
    config: TrainConfig,
    *,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_phase: Callable[[str], None] = lambda _phase: None,
) -> TrainResult:
    """One training run. Raises NotEnoughMemory before loading anything when it would not fit, and
    TrainingStopped (the last checkpoint kept) when `should_stop` said so."""
    training = setup(config, on_log=on_log, should_stop=should_stop, on_phase=on_phase)
    try:
        train(training, on_phase=on_phase)
        evaluate(training)
        return save(training, on_phase=on_phase)
    finally:
        cleanup(training)


def setup(
    config: TrainConfig,
    *,
    on_log: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    on_phase: Callable[[str], None],
) -> Training:
    """The data read and measured, the memory checked, the base model loaded, the trainer built."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed
    from trl import SFTTrainer

    started = time.monotonic()
    set_seed(config.seed)
    cuda = torch.cuda.is_available()
    quantize = cuda if config.quantize_4bit is None else config.quantize_4bit

    on_phase("reading the dataset")
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    tokenizer.chat_template = Path(config.chat_template or _project_chat_template(config.base_model)).read_text()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows = jsonl_read(config.train_file)
    eval_rows = jsonl_read(config.eval_file) if config.eval_file else []
    if not train_rows:
        raise ValueError(f"{config.train_file} has no training examples")
    eval_lengths = example_lengths(tokenizer, eval_rows)
    schedule = schedule_for(config, lengths=example_lengths(tokenizer, train_rows), held_out=bool(eval_rows))
    estimate = memory_check(config, schedule=schedule, cuda=cuda, quantize=quantize)

    moe = is_moe(config.base_model)
    on_phase("loading the base model")
    model = base_model_load(
        config.base_model,
        quantize=quantize,
        cuda=cuda,
        quantize_experts=config.quantize_experts and not config.lora_experts,  # expert LoRA needs them fused
    )
    if quantize:
        from peft import prepare_model_for_kbit_training

        # It casts every parameter that is not 4-bit to fp32: experts left in bf16 would double.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    _loss_tiles(cuda=cuda)
    early = bool(eval_rows) and config.max_steps <= 0 and config.early_stopping_patience > 0
    clock: dict = {}
    stopped: list = []
    callbacks = [_progress_callback(on_log, should_stop, stopped, clock)]
    if early:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    on_phase("packing the examples")
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(
            config,
            schedule=schedule,
            cuda=cuda,
            moe=moe,
            held_out=bool(eval_rows),
            early=early,
            longest_eval=max(eval_lengths, default=0),
        ),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=_lora_config(config, moe=moe),
        callbacks=callbacks,
    )
    _time_evaluations(trainer, clock)
    return Training(
        config=config,
        started=started,
        cuda=cuda,
        schedule=schedule,
        estimate=estimate,
        train_examples=len(train_rows),
        held_out=bool(eval_rows),
        eval_lengths=eval_lengths,
        early=early,
        trainer=trainer,
        clock=clock,
        stopped=stopped,
    )


def _lora_config(config: TrainConfig, *, moe: bool):
    from peft import LoraConfig

    experts = moe and config.lora_experts
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.lora_alpha,
        # PEFT's LoRA on raw parameters (the fused experts) does not support dropout.
        lora_dropout=0.0 if experts else config.dropout,
        target_modules=config.target_modules or (list(ATTENTION) if moe else "all-linear"),
        target_parameters=list(EXPERT_PARAMETERS) if experts else None,
        task_type="CAUSAL_LM",
    )


def _sft_config(
    config: TrainConfig, *, schedule: Schedule, cuda: bool, moe: bool, held_out: bool, early: bool, longest_eval: int
):
    from trl import SFTConfig

    save_steps = config.save_steps or schedule.eval_every or 25
    if early:
        save_steps = schedule.eval_every  # the best checkpoint must be one that was evaluated
    return SFTConfig(
        output_dir=str(config.work_path),
        max_steps=schedule.steps,
        per_device_train_batch_size=1,  # one pack of up to tokens_per_step tokens
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=math.ceil(schedule.steps * config.warmup_fraction),
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        eval_strategy="steps" if held_out else "no",
        eval_steps=schedule.eval_every or None,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        max_length=max(schedule.tokens_per_step, longest_eval),
        packing=True,
        packing_strategy="bfd",
        assistant_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=cuda,
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[],
        dataloader_num_workers=0,
        router_aux_loss_coef=config.router_aux_loss_coef if moe else None,
    )


def train(training: Training, *, on_phase: Callable[[str], None]) -> None:
    """The optimizer steps, resumed from the last complete checkpoint when there is one."""
    on_phase("training")
    training.resumed_from = _last_complete_checkpoint(training.config.work_path)
    began = time.monotonic()
    training.output = training.trainer.train(resume_from_checkpoint=training.resumed_from)
    training.train_seconds = time.monotonic() - began
    if training.stopped:
        raise TrainingStopped(f"stopped at step {training.stopped[0]}; checkpoints in {training.config.work_path}")


def evaluate(training: Training) -> None:
    """The held-out loss of the adapter to be saved: the best evaluation's with early stopping
    (its checkpoint is what the trainer reloaded), else one pass over the held-out file now."""
    trainer = training.trainer
    if training.early:
        if trainer.state.best_model_checkpoint:
            training.best_step = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1])
        training.eval_loss = trainer.state.best_metric
    if training.held_out and training.eval_loss is None:
        training.eval_loss = trainer.evaluate()["eval_loss"]


def save(training: Training, *, on_phase: Callable[[str], None]) -> TrainResult:
    """The adapter and its training_result.json, written to a staging folder beside `output_dir`,
    synced, checked complete and only then renamed into place."""
    from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME  # the files an adapter is (serving's ADAPTER_FILES)

    on_phase("saving the adapter")
    config, schedule, trainer, clock = training.config, training.schedule, training.trainer, training.clock
    final = Path(config.output_dir)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    trainer.model.save_pretrained(str(staging))
    steps_done = trainer.state.global_step
    trained_tokens = int(getattr(trainer, "_total_train_tokens", 0) or 0)
    seconds_per_step = _seconds_per_step(clock)
    result = TrainResult(
        adapter_dir=str(final),
        steps=steps_done,
        epochs=round(steps_done / max(1, math.ceil(schedule.train_tokens / schedule.tokens_per_step)), 2),
        max_length=schedule.tokens_per_step,
        train_examples=training.train_examples,
        train_loss=training.output.training_loss,
        eval_loss=training.eval_loss,
        train_tokens=trained_tokens,
        seconds=round(time.monotonic() - training.started, 1),
        resumed_from=training.resumed_from,
        stopped_early=training.early and steps_done < schedule.steps,
        best_step=training.best_step,
        train_seconds=round(training.train_seconds, 1),
        tokens_per_second=(
            round(trained_tokens / steps_done / seconds_per_step, 1)
            if seconds_per_step and trained_tokens and not training.resumed_from
            else None
        ),
        eval_tokens_per_second=(
            round(sum(training.eval_lengths) / clock["eval_seconds"], 1) if clock.get("eval_seconds") else None
        ),
        memory_estimate_bytes=training.estimate.peak_bytes,
    )
    (staging / "training_result.json").write_text(json.dumps({"config": asdict(config), **asdict(result)}, indent=2))
    for name in os.listdir(staging):
        with open(staging / name, "rb") as handle:
            os.fsync(handle.fileno())
    missing = [name for name in (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME) if not (staging / name).exists()]
    if missing:
        raise RuntimeError(f"the adapter is incomplete (missing {missing}); nothing was renamed into place")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return result


def cleanup(training: Training) -> None:
    """The model and trainer released (GPU memory included), whether the run finished or not."""
    training.trainer = None
    gc.collect()
    if training.cuda:
        import torch

        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()


def _time_evaluations(trainer, clock: dict) -> None:
    """Measures each evaluation pass, so that training throughput leaves it out."""
    evaluate = trainer.evaluate

    def timed(*args, **kwargs):
        begun = time.monotonic()
        try:
            return evaluate(*args, **kwargs)
        finally:
            clock["eval_seconds"] = time.monotonic() - begun

    trainer.evaluate = timed


# -- the CLI -------------------------------------------------------------------------------------------


class _HelpFormat(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """This docstring as written, and each flag's default after its help."""


def config_from_argv(argv: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from command-line flags, one a field (transformers' HfArgumentParser reads
    the dataclass: names, types, defaults and the fields' help)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(TrainConfig, description=__doc__, formatter_class=_HelpFormat)
    config, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True, look_for_args_file=False
    )
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (TrainConfig has no such field)")
    return config


def main(argv: list[str] | None = None) -> None:
    config = config_from_argv(argv)
    result = run(config, on_log=lambda line: print(json.dumps(line), flush=True), on_phase=print)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

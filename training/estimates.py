"""Training-time estimates from what this machine measured.

Each finished training run records its throughput per base model and device
(`throughput_record`: training tokens/s with evaluations left out, held-out tokens/s, the
seconds spent loading before the first step and evaluating after the last). The export's
report and a job's ETA come from the latest record for the base model (`training_estimate`),
and from TRAINING_ESTIMATE_TOKENS_PER_SECOND only until a first job has run. During a job the
ETA follows the steps already timed (training/jobs.py::job_progress).
"""

from __future__ import annotations

import math
from pathlib import Path

from django.conf import settings
from django.db.models import F

from training.config import train_config
from training.models import ThroughputProfile
from training.recipe import schedule_for


def device_label() -> str:
    """The device a training process runs on, as the profiles name it."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {len(os.sched_getaffinity(0))} cores"


def throughput_record(
    *,
    base_model: str,
    device: str,
    tokens_per_second: float,
    eval_tokens_per_second: float | None,
    setup_seconds: float,
    evaluation_seconds: float,
) -> ThroughputProfile:
    profile, created = ThroughputProfile.objects.get_or_create(
        base_model=base_model,
        device=device,
        defaults={
            "tokens_per_second": tokens_per_second,
            "eval_tokens_per_second": eval_tokens_per_second,
            "setup_seconds": setup_seconds,
            "evaluation_seconds": evaluation_seconds,
        },
    )
    if not created:
        ThroughputProfile.objects.filter(pk=profile.pk).update(
            tokens_per_second=tokens_per_second,
            eval_tokens_per_second=eval_tokens_per_second or profile.eval_tokens_per_second,
            setup_seconds=setup_seconds,
            evaluation_seconds=evaluation_seconds or profile.evaluation_seconds,
            jobs=F("jobs") + 1,
        )
        profile.refresh_from_db()
    return profile


def throughput_latest(*, base_model: str) -> ThroughputProfile | None:
    return ThroughputProfile.objects.filter(base_model=base_model).order_by("-updated_at").first()


# Until a first job has measured them (figures of the demo model on 2 CPU cores): loading before
# the first step, held-out evaluation against training throughput, and one vLLM reply.
SETUP_SECONDS_ASSUMED = 30.0
EVAL_SPEEDUP_ASSUMED = 3.5
REPLY_SECONDS_ASSUMED = 2.0


def training_estimate(
    *, base_model: str, lengths: list[int], eval_tokens: int, eval_examples: int = 0, overrides: dict | None = None
) -> dict:
    """Steps, evaluations and seconds a job on this data will take with the deployment's settings
    (an upper bound: early stopping can end it sooner)."""
    config = train_config(base_model=base_model, train_file="", output_dir="", overrides=overrides)
    schedule = schedule_for(config, lengths=lengths, held_out=eval_tokens > 0)
    profile = throughput_latest(base_model=str(Path(base_model)))
    rate = profile.tokens_per_second if profile else settings.TRAINING_ESTIMATE_TOKENS_PER_SECOND
    eval_rate = (profile.eval_tokens_per_second if profile else None) or EVAL_SPEEDUP_ASSUMED * rate
    packs_per_epoch = max(1, math.ceil(schedule.train_tokens / schedule.tokens_per_step))
    tokens_a_step = schedule.train_tokens / packs_per_epoch
    evaluations = schedule.steps // schedule.eval_every if schedule.eval_every else 0
    training = schedule.steps * tokens_a_step / rate
    evaluating = evaluations * eval_tokens / eval_rate
    setup = profile.setup_seconds if profile else SETUP_SECONDS_ASSUMED
    if profile and profile.evaluation_seconds:
        after = profile.evaluation_seconds
    else:  # the gate: held-out loss of base, adapter in service and candidate; two models' replies
        replies = 2 * min(eval_examples, settings.TRAINING_GATE_SAMPLES)
        after = 3 * eval_tokens / eval_rate + replies * REPLY_SECONDS_ASSUMED
    return {
        "steps": schedule.steps,
        "tokens_per_step": schedule.tokens_per_step,
        "epochs": schedule.epochs,
        "evaluations": evaluations,
        "tokens_per_second": round(rate, 1),
        "measured_on": profile.device if profile else None,
        "setup_seconds": round(setup),
        "training_seconds": round(training + evaluating),
        "evaluation_seconds": round(after),
        "seconds": round(setup + training + evaluating + after),
    }


def duration_words(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def estimate_words(estimate: dict) -> str:
    source = (
        f"measured on {estimate['measured_on']}"
        if estimate.get("measured_on")
        else "assumed until a first job measures it (TRAINING_ESTIMATE_TOKENS_PER_SECOND)"
    )
    return (
        f"estimated time: {duration_words(estimate['seconds'])} "
        f"({estimate['steps']} steps of up to {estimate['tokens_per_step']} tokens, "
        f"about {estimate['epochs']:g} epochs, "
        f"{estimate['evaluations']} held-out evaluations, at {estimate['tokens_per_second']:g} tokens/s {source}; "
        "early stopping may end it sooner)"
    )

"""A job's TrainConfig: the recipe's fields with this deployment's defaults (settings,
docs/configuration.md), then the job's own overrides; and the flags that set those overrides
from a command line (`manage.py train_adapter`), generated from TrainConfig as the recipe's are."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from django.conf import settings

from training.recipe import TrainConfig

# TrainConfig field ← setting. Fields not listed keep the recipe's own default.
SETTING_DEFAULTS = {
    "tokens_per_step": "TRAINING_TOKENS_PER_STEP",
    "epochs": "TRAINING_EPOCHS",
    "min_steps": "TRAINING_MIN_STEPS",
    "step_budget": "TRAINING_STEP_BUDGET",
    "evals_per_epoch": "TRAINING_EVALS_PER_EPOCH",
    "early_stopping_patience": "TRAINING_EARLY_STOPPING_PATIENCE",
    "rank": "TRAINING_LORA_RANK",
    "learning_rate": "TRAINING_LEARNING_RATE",
}
# Set by the job itself (training/child.py), never by an override.
JOB_PATHS = ("base_model", "train_file", "eval_file", "output_dir", "work_dir")
OVERRIDABLE = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in JOB_PATHS)


def train_config(
    *, base_model: str, train_file: str, output_dir: str, overrides: dict | None = None, **paths
) -> TrainConfig:
    """Raises TypeError naming the field when an override is not a TrainConfig field."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise TypeError(f"not training settings: {', '.join(unknown)}")
    values = {field: getattr(settings, name) for field, name in SETTING_DEFAULTS.items()}
    if settings.TRAINING_MEMORY_LIMIT_MB:
        values["memory_limit_mb"] = settings.TRAINING_MEMORY_LIMIT_MB
    values.update(overrides or {})
    return TrainConfig(base_model=base_model, train_file=train_file, output_dir=output_dir, **paths, **values)


def overrides_parser() -> argparse.ArgumentParser:
    """A parent parser with a flag for each TrainConfig field a job may override, typed and with
    its help (transformers' HfArgumentParser, as the recipe's CLI). Each defaults to None, which
    means "not overridden": the deployment's default stays in force (a boolean takes a value,
    `--check_memory false`)."""
    from transformers import HfArgumentParser

    kinds = typing.get_type_hints(TrainConfig)
    overridable = [
        (f.name, kinds[f.name] | None, dataclasses.field(default=None, metadata=f.metadata))
        for f in dataclasses.fields(TrainConfig)
        if f.name in OVERRIDABLE
    ]
    return HfArgumentParser(dataclasses.make_dataclass("Overrides", overridable), add_help=False)

"""The recipe's CLI and train_adapter's flags are generated from TrainConfig: every field a flag,
typed, with its help."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from django.core.management import CommandError

from training.config import JOB_PATHS, OVERRIDABLE
from training.management.commands.train_adapter import Command
from training.recipe import TrainConfig, config_from_argv

pytestmark = [pytest.mark.fast]

PATHS = ["--base_model", "m", "--train_file", "t.jsonl", "--output_dir", "out"]


def flag_and_value(field: dataclasses.Field, kind) -> tuple[list[str], object]:
    """Command-line words setting `field` to a value other than its default, and that value."""
    flag = f"--{field.name}"
    base = next((k for k in typing.get_args(kind) if k is not type(None)), kind)
    if kind == bool | None:
        return [flag, "false"], False  # unset means "on CUDA": false is a value of its own
    if base is bool:
        return ([f"--no_{field.name}"], False) if field.default else ([flag], True)
    if typing.get_origin(base) is list:
        return [flag, "q_proj", "v_proj"], ["q_proj", "v_proj"]
    if base is int:
        value = (field.default if isinstance(field.default, int) else 0) + 3
        return [flag, str(value)], value
    if base is float:
        return [flag, "0.375"], 0.375
    return [flag, f"{field.name}-value"], f"{field.name}-value"


def test_every_field_is_a_flag_and_each_flag_sets_its_field():
    kinds = typing.get_type_hints(TrainConfig)
    argv, expected = [], {}
    for field in dataclasses.fields(TrainConfig):
        words, value = flag_and_value(field, kinds[field.name])
        argv += words
        expected[field.name] = value
    config = config_from_argv(argv)
    assert {name: getattr(config, name) for name in expected} == expected
    assert all(field.metadata.get("help") for field in dataclasses.fields(TrainConfig))  # --help says what each does


def test_the_defaults_are_the_dataclass_defaults_and_alpha_follows_the_rank():
    assert config_from_argv(PATHS) == TrainConfig(base_model="m", train_file="t.jsonl", output_dir="out")
    assert config_from_argv([*PATHS, "--rank", "4"]).lora_alpha == 8
    assert config_from_argv([*PATHS, "--rank", "4", "--lora-alpha", "5"]).lora_alpha == 5


def test_a_mistyped_value_or_an_unknown_field_is_refused(capsys):
    with pytest.raises(SystemExit):
        config_from_argv([*PATHS, "--rank", "sixteen"])
    with pytest.raises(SystemExit):
        config_from_argv([*PATHS, "--alpha", "8"])
    assert "unrecognized arguments: --alpha 8" in capsys.readouterr().err


def test_train_adapter_takes_every_field_but_the_paths_and_only_the_flags_given_become_overrides():
    parser = Command().create_parser("manage.py", "train_adapter")

    def overrides(*argv: str) -> dict:
        given = vars(parser.parse_args(["--course", "3", *argv]))
        return {name: given[name] for name in OVERRIDABLE if given[name] is not None}

    assert overrides() == {}  # the deployment's defaults, untouched
    assert overrides("--max-steps", "4", "--lora_alpha", "9", "--check_memory", "false") == {
        "max_steps": 4,
        "lora_alpha": 9,
        "check_memory": False,
    }
    kinds = typing.get_type_hints(TrainConfig)
    argv, expected = [], {}
    for field in dataclasses.fields(TrainConfig):
        if field.name in OVERRIDABLE:
            words, expected[field.name] = flag_and_value(field, kinds[field.name])
            if words[0].startswith("--no_"):  # here a boolean takes its value
                words = [f"--{field.name}", "false"]
            elif len(words) == 1:
                words = [*words, "true"]
            argv += words
    assert overrides(*argv) == expected
    for path in JOB_PATHS:  # the job sets its own
        with pytest.raises(CommandError, match=f"unrecognized arguments: --{path}"):
            parser.parse_args(["--course", "3", f"--{path}", "x"])

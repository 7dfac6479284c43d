"""The recipe's CLI is generated from TrainConfig: every field is a flag, typed, with its help."""

from __future__ import annotations

import dataclasses
import typing

import pytest

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

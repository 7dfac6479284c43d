"""The recipe's schedule follows the data's tokens, and the ETA follows what was measured."""

from __future__ import annotations

import pytest

from training.jobs import job_eta
from training.recipe import TrainConfig, schedule_for

pytestmark = [pytest.mark.fast]


def config(**fields) -> TrainConfig:
    return TrainConfig(base_model="m", train_file="t", output_dir="o", **fields)


def test_a_class_sized_course_gets_one_and_a_half_passes_of_full_packs():
    schedule = schedule_for(config(), lengths=[165] * 180, held_out=True)  # 29,700 tokens
    assert schedule.tokens_per_step == 512
    assert schedule.steps == 88  # ceil(1.5 x 29,700 / 512)
    assert schedule.epochs == pytest.approx(1.5, abs=0.1)
    assert schedule.eval_every == 30  # two evaluations an epoch of 59 packs


def test_a_small_course_gets_smaller_packs_not_more_passes():
    schedule = schedule_for(config(), lengths=[60] * 40, held_out=True)  # 2,400 tokens
    assert schedule.steps == 20  # the minimum
    assert schedule.tokens_per_step == 180  # ceil(1.5 x 2,400 / 20), never below the longest example
    assert schedule.epochs < 2


def test_a_large_course_stops_at_the_step_budget_and_a_long_example_widens_its_pack():
    large = schedule_for(config(step_budget=500), lengths=[300] * 10_000, held_out=False)
    assert large.steps == 500 and large.eval_every == 0
    wide = schedule_for(config(), lengths=[100] * 500 + [1500], held_out=False)
    assert wide.tokens_per_step == 1500


def test_max_steps_runs_exactly_that_many():
    assert schedule_for(config(max_steps=7), lengths=[60] * 40, held_out=True).steps == 7


def test_the_eta_uses_the_measured_pace_and_the_evaluations_to_go():
    job = {"evaluation_seconds": 30.0, "estimate_seconds": 900, "started_at": None}
    line = {"seconds_per_step": 2.0, "eval_every": 10, "eval_seconds": 5.0}
    # 60 steps to go at 2 s, evaluations at 50, 60, ..., 100 (6 of them) at 5 s, then 30 s of gate.
    assert job_eta(step=40, total=100, line=line, job=job) == 60 * 2 + 6 * 5 + 30
    assert job_eta(step=100, total=100, line=line, job=job) == 30

"""python -m training.child JOB_ID

One training job's training and evaluation, in a fresh process of its own (started by the
Celery task with subprocess, never forked), so its memory (GPU memory included) is returned
when it exits. Exit status: 0 done, 3 stopped (cancelled, or its worker died: the last
checkpoint is kept and the next attempt resumes from it), anything else failed. A failure the
child can explain (not enough memory for the job, memory exhausted mid-run, a bad setting) is
written in plain words to FAILURE_FILE in the job's folder, which the worker reports.

One attempt is four named steps run in a line, as the recipe's are (training/recipe.py):

* `setup`: the job's `TrainConfig` (the deployment's defaults, then the job's overrides);
* `train`: the recipe's `run`, then the adapter registered and the job moved to evaluating in
  one transaction; an adapter an earlier attempt registered (its files intact) is evaluated
  rather than trained again;
* `evaluate`: the held-out loss of the base model, the adapter in service and the new one, and
  the held-out questions answered through vLLM by the new one and by what serves the course;
* `save`: the evaluation onto the job and the adapter, its duration onto the throughput profile.

The recipe releases the model itself; the rest is released by the process's exit. Django is set
up in `main` before any step runs, so the steps import the models they use themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.recipe import NotEnoughMemory, TrainConfig, TrainingStopped, TrainResult, run
from training.workdir import FAILURE_FILE

if TYPE_CHECKING:
    from serving.models import AdapterVersion
    from training.models import ThroughputProfile, TrainingJob

OUT_OF_MEMORY = "out_of_memory"
DONE, FAILED, STOPPED = 0, 2, 3


class Stopped(Exception):
    """The worker died: a resumed attempt takes over. (A cancelled job stops the recipe: TrainingStopped.)"""


class Failed(Exception):
    """A failure the child can explain; `kind` and the message go to FAILURE_FILE."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def failure_write(work: Path, *, kind: str, message: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / FAILURE_FILE).write_text(json.dumps({"kind": kind, "message": message}))


def main(job_id: int) -> int:
    started = time.monotonic()  # the setup an estimate must count starts here, imports included
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from training.models import TrainingJob

    job = TrainingJob.objects.select_related("dataset", "adapter").get(pk=job_id)
    work = Path(job.work_dir)
    (work / FAILURE_FILE).unlink(missing_ok=True)
    try:
        attempt = setup(job, started=started)
        trained = train(attempt)
        evaluation = evaluate(attempt, adapter=trained.adapter)
        save(attempt, trained=trained, evaluation=evaluation)
    except (Stopped, TrainingStopped):
        return STOPPED
    except Failed as failure:
        failure_write(work, kind=failure.kind, message=str(failure))
        return FAILED
    return DONE


@dataclass
class Attempt:
    """What `setup` builds for the later steps: the job, its config, and how to report to it."""

    job: TrainingJob
    base_model: str
    config: TrainConfig
    started: float  # monotonic, when the process started
    parent: int  # the worker's pid: another parent means it died
    stop_requested: bool = False  # the job was cancelled (job_progress says so)

    @property
    def work(self) -> Path:
        return Path(self.job.work_dir)

    def orphaned(self) -> bool:
        return os.getppid() != self.parent

    def should_stop(self) -> bool:
        return self.stop_requested or self.orphaned()

    def on_log(self, line: dict) -> None:
        from training.jobs import job_progress

        self.stop_requested = job_progress(job_id=self.job.pk, line=line) or self.stop_requested

    def on_phase(self, phase: str) -> None:
        from training.jobs import job_phase

        job_phase(job_id=self.job.pk, phase=phase)


@dataclass
class Trained:
    """What `train` hands on: the registered adapter, and the throughput it measured (None when
    an earlier attempt trained it)."""

    adapter: AdapterVersion
    profile: ThroughputProfile | None
    finished: float  # monotonic: the evaluation's duration counts from here


def setup(job: TrainingJob, *, started: float) -> Attempt:
    from serving.model_server import base_model_dir
    from training.config import train_config

    parent = os.getppid()
    work = Path(job.work_dir)
    base = str(base_model_dir())
    try:
        config = train_config(
            base_model=base,
            train_file=job.dataset.train_path,
            eval_file=job.dataset.eval_path or None,
            # One folder per attempt: a registered adapter's files are never overwritten by a later one.
            output_dir=str(work / f"adapter-{job.attempts}"),
            work_dir=str(work / "checkpoints"),
            overrides=job.overrides,
        )
    except TypeError as exc:
        raise Failed("bad_setting", f"This job's settings are not valid: {exc}.") from exc
    return Attempt(job=job, base_model=base, config=config, started=started, parent=parent)


def train(attempt: Attempt) -> Trained:
    """The adapter trained and registered, and the job moved on to evaluating it."""
    from django.db import transaction

    from serving.adapters import adapter_register
    from training.estimates import device_label, throughput_record
    from training.jobs import State, job_transition
    from training.models import TrainingJob

    adapter = registered_adapter(attempt.job)
    if adapter is not None:
        job_transition(
            job_id=attempt.job.pk,
            to=State.EVALUATING,
            from_states=(State.TRAINING,),
            message=f"{adapter.name} was trained before the worker stopped; evaluating it",
        )
        shutil.rmtree(attempt.work / "checkpoints", ignore_errors=True)
        return Trained(adapter=adapter, profile=None, finished=time.monotonic())
    result = recipe_run(attempt)
    profile = None
    if result.tokens_per_second:
        profile = throughput_record(
            base_model=attempt.base_model,
            device=device_label(),
            tokens_per_second=result.tokens_per_second,
            eval_tokens_per_second=result.eval_tokens_per_second,
            setup_seconds=max(time.monotonic() - attempt.started - (result.train_seconds or 0), 0),
            evaluation_seconds=0,
        )
    # Registered and recorded on the job in one transaction: a worker that dies from here on
    # leaves a job that resumes at the evaluation, and one that fails rejects this candidate.
    with transaction.atomic():
        adapter = adapter_register(
            course_id=attempt.job.course_id,
            path=Path(attempt.config.output_dir),
            base_model=attempt.base_model,
            metrics=asdict(result),
        )
        TrainingJob.objects.filter(pk=attempt.job.pk).update(adapter=adapter)
        job_transition(job_id=attempt.job.pk, to=State.EVALUATING, from_states=(State.TRAINING,), message="trained")
    shutil.rmtree(attempt.work / "checkpoints", ignore_errors=True)  # the adapter is complete; resuming is moot
    return Trained(adapter=adapter, profile=profile, finished=time.monotonic())


def recipe_run(attempt: Attempt) -> TrainResult:
    """The recipe's run, reporting to the job; a run that cannot fit in memory is a Failed."""
    try:
        return run(attempt.config, on_log=attempt.on_log, should_stop=attempt.should_stop, on_phase=attempt.on_phase)
    except NotEnoughMemory as exc:
        raise Failed(OUT_OF_MEMORY, f"Not started: {exc}") from exc
    except (MemoryError, RuntimeError) as exc:  # an allocation refused (a limit on the process)
        if not isinstance(exc, MemoryError) and "allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        raise Failed(
            OUT_OF_MEMORY,
            f"Out of memory: an allocation was refused during training ({str(exc)[:200]}). "
            "Lower TRAINING_TOKENS_PER_STEP or give the worker more memory.",
        ) from exc


def evaluate(attempt: Attempt, *, adapter: AdapterVersion) -> dict:
    """The evaluation the gate decides on: the training's metrics, the held-out losses and the
    served replies (without a held-out file, the training's metrics alone)."""
    from django.conf import settings

    from serving.adapters import adapter_store
    from serving.chat_templates import chat_template_path
    from serving.client import model_for_course
    from serving.models import AdapterVersion
    from training.evaluate import gate_replies, heldout_losses

    train_metrics = {
        k: v for k, v in adapter.metrics.items() if not k.endswith("_loss") or k in ("train_loss", "eval_loss")
    }
    evaluation: dict = {"adapter_id": adapter.id, "train": train_metrics}
    if attempt.orphaned():
        raise Stopped
    eval_file = attempt.config.eval_file
    if not eval_file:
        return evaluation
    active = AdapterVersion.objects.filter(course_id=attempt.job.course_id, status="active").first()
    candidates = {"base_loss": None, "candidate_loss": adapter.path}
    if active:
        candidates["active_loss"] = active.path
    attempt.on_phase("evaluating: held-out loss of the base model, the adapter in service and the new one")
    evaluation.update(
        heldout_losses(
            base_model=attempt.base_model,
            eval_file=eval_file,
            adapters=candidates,
            chat_template=str(chat_template_path(Path(attempt.base_model))),
        )
    )
    if attempt.orphaned():  # a resumed attempt evaluates it again; do not hold a model beside it
        raise Stopped
    # The held-out questions answered the way students would be answered: through vLLM, by the
    # candidate and by what serves the course now; a failure here is a result that blocks the gate.
    attempt.on_phase("evaluating: the held-out questions answered through the model server")
    try:
        # Into the store, not pushed into one replica: behind a router the gate's replies may be
        # answered by any of them, and each resolves the candidate from the store by name.
        adapter_store(adapter=adapter)
        current = model_for_course(course_id=attempt.job.course_id)
        evaluation.update(
            gate_replies(
                eval_file=eval_file,
                models={"candidate": adapter.name, "current": current},
                limit=settings.TRAINING_GATE_SAMPLES,
                course_id=attempt.job.course_id,
            )
        )
    except Exception as exc:  # the adapter could not be loaded, say: recorded, and the gate says no
        evaluation["samples_error"] = str(exc)[:300]
    return evaluation


def save(attempt: Attempt, *, trained: Trained, evaluation: dict) -> None:
    """The evaluation onto the job the worker gates on, and the held-out losses onto the adapter."""
    from serving.models import AdapterVersion
    from training.jobs import State
    from training.models import ThroughputProfile, TrainingJob

    if attempt.orphaned():
        raise Stopped
    if trained.profile is not None:  # what the gate's evaluation took, for the next estimate
        ThroughputProfile.objects.filter(pk=trained.profile.pk).update(
            evaluation_seconds=time.monotonic() - trained.finished
        )
    losses = {k: v for k, v in evaluation.items() if k.endswith("_loss")}
    AdapterVersion.objects.filter(pk=trained.adapter.pk).update(metrics={**evaluation["train"], **losses})
    # Only onto the job this attempt is still evaluating (not one failed or taken over meanwhile).
    TrainingJob.objects.filter(pk=attempt.job.pk, state=State.EVALUATING, adapter=trained.adapter).update(
        evaluation=evaluation
    )


def registered_adapter(job: TrainingJob) -> AdapterVersion | None:
    """The adapter an earlier attempt of this job trained and registered, if its files are intact."""
    from serving.adapters import adapter_checksum, adapter_reject
    from serving.models import AdapterVersion

    adapter = job.adapter
    if adapter is None or adapter.status != AdapterVersion.Status.CANDIDATE:
        return None
    try:
        intact = adapter_checksum(Path(adapter.path)) == adapter.sha256
    except OSError:
        intact = False
    if not intact:
        adapter_reject(adapter_id=adapter.pk)  # unloaded too, if an earlier attempt loaded it
        return None
    return adapter


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

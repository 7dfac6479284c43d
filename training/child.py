"""python -m training.child JOB_ID

One training job's training and evaluation, in a fresh process of its own (started by the
Celery task with subprocess, never forked), so its memory (GPU memory included) is returned
when it exits. Exit status: 0 done, 3 stopped (cancelled, or its worker died: the last
checkpoint is kept and the next attempt resumes from it), anything else failed. A failure the
child can explain (not enough memory for the job, memory exhausted mid-run, a bad setting) is
written in plain words to FAILURE_FILE in the job's folder, which the worker reports.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

FAILURE_FILE = "failure.json"
OUT_OF_MEMORY = "out_of_memory"


def failure_write(work: Path, *, kind: str, message: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / FAILURE_FILE).write_text(json.dumps({"kind": kind, "message": message}))


def main(job_id: int) -> int:
    started = time.monotonic()  # the setup an estimate must count starts here, imports included
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from dataclasses import asdict

    from django.db import transaction

    from serving.adapters import adapter_register
    from serving.chat_templates import chat_template_path
    from serving.client import active_adapter_name, adapter_load
    from serving.model_server import base_model_dir
    from serving.models import AdapterVersion
    from training.config import train_config
    from training.estimates import device_label, throughput_record
    from training.evaluate import gate_replies, heldout_losses
    from training.jobs import State, job_phase, job_progress, job_transition
    from training.models import ThroughputProfile, TrainingJob
    from training.recipe import NotEnoughMemory, TrainingStopped, run

    job = TrainingJob.objects.select_related("dataset", "adapter").get(pk=job_id)
    parent = os.getppid()
    work = Path(job.work_dir)
    (work / FAILURE_FILE).unlink(missing_ok=True)
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
        failure_write(work, kind="bad_setting", message=f"This job's settings are not valid: {exc}.")
        return 2
    stop = {"now": False}

    def on_log(line: dict) -> None:
        stop["now"] = job_progress(job_id=job_id, line=line) or stop["now"]

    def on_phase(phase: str) -> None:
        job_phase(job_id=job_id, phase=phase)

    def orphaned() -> bool:
        return os.getppid() != parent  # the worker died; a resumed attempt takes over

    def should_stop() -> bool:
        return stop["now"] or orphaned()

    adapter = registered_adapter(job)
    if adapter is None:
        try:
            result = run(config, on_log=on_log, should_stop=should_stop, on_phase=on_phase)
        except TrainingStopped:
            return 3
        except NotEnoughMemory as exc:
            failure_write(work, kind=OUT_OF_MEMORY, message=f"Not started: {exc}")
            return 2
        except (MemoryError, RuntimeError) as exc:  # an allocation refused (a limit on the process)
            if (
                not isinstance(exc, MemoryError)
                and "allocate memory" not in str(exc)
                and "out of memory" not in str(exc)
            ):
                raise
            failure_write(
                work,
                kind=OUT_OF_MEMORY,
                message=f"Out of memory: an allocation was refused during training ({str(exc)[:200]}). "
                "Lower TRAINING_TOKENS_PER_STEP or give the worker more memory.",
            )
            return 2
        profile = None
        if result.tokens_per_second:
            profile = throughput_record(
                base_model=base,
                device=device_label(),
                tokens_per_second=result.tokens_per_second,
                eval_tokens_per_second=result.eval_tokens_per_second,
                setup_seconds=max(time.monotonic() - started - (result.train_seconds or 0), 0),
                evaluation_seconds=0,
            )
        # Registered and recorded on the job in one transaction: a worker that dies from here on
        # leaves a job that resumes at the evaluation, and one that fails rejects this candidate.
        with transaction.atomic():
            adapter = adapter_register(
                course_id=job.course_id, path=Path(config.output_dir), base_model=base, metrics=asdict(result)
            )
            TrainingJob.objects.filter(pk=job_id).update(adapter=adapter)
            job_transition(job_id=job_id, to=State.EVALUATING, from_states=(State.TRAINING,), message="trained")
        shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the adapter is complete; resuming is moot
    else:
        profile = None
        job_transition(
            job_id=job_id,
            to=State.EVALUATING,
            from_states=(State.TRAINING,),
            message=f"{adapter.name} was trained before the worker stopped; evaluating it",
        )
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    evaluating_since = time.monotonic()
    train_metrics = {
        k: v for k, v in adapter.metrics.items() if not k.endswith("_loss") or k in ("train_loss", "eval_loss")
    }
    evaluation: dict = {"adapter_id": adapter.id, "train": train_metrics}
    if config.eval_file and not orphaned():
        active = AdapterVersion.objects.filter(course_id=job.course_id, status="active").first()
        candidates = {"base_loss": None, "candidate_loss": adapter.path}
        if active:
            candidates["active_loss"] = active.path
        on_phase("evaluating: held-out loss of the base model, the adapter in service and the new one")
        evaluation.update(
            heldout_losses(
                base_model=base,
                eval_file=config.eval_file,
                adapters=candidates,
                chat_template=str(chat_template_path(Path(base))),
            )
        )
        if orphaned():  # a resumed attempt evaluates it again; do not hold a model beside it
            return 3
        # The held-out questions answered the way students would be answered: through vLLM, by the
        # candidate and by what serves the course now; a failure here is a result that blocks the gate.
        from django.conf import settings

        on_phase("evaluating: the held-out questions answered through the model server")
        try:
            adapter_load(adapter)
            current = active_adapter_name(course_id=job.course_id) or settings.MODEL_SERVED_NAME
            evaluation.update(
                gate_replies(
                    eval_file=config.eval_file,
                    models={"candidate": adapter.name, "current": current},
                    limit=settings.TRAINING_GATE_SAMPLES,
                )
            )
        except Exception as exc:  # the adapter could not be loaded, say: recorded, and the gate says no
            evaluation["samples_error"] = str(exc)[:300]
    if orphaned():
        return 3
    if profile is not None:  # what the gate's evaluation took, for the next estimate
        ThroughputProfile.objects.filter(pk=profile.pk).update(evaluation_seconds=time.monotonic() - evaluating_since)
    AdapterVersion.objects.filter(pk=adapter.pk).update(
        metrics={**train_metrics, **{k: v for k, v in evaluation.items() if k.endswith("_loss")}}
    )
    # Only onto the job this attempt is still evaluating (not one failed or taken over meanwhile).
    TrainingJob.objects.filter(pk=job_id, state=State.EVALUATING, adapter=adapter).update(evaluation=evaluation)
    return 0


def registered_adapter(job):
    """The adapter an earlier attempt of this job trained and registered, if its files are intact."""
    from serving.adapters import adapter_checksum
    from serving.models import AdapterVersion

    adapter = job.adapter
    if adapter is None or adapter.status != AdapterVersion.Status.CANDIDATE:
        return None
    try:
        intact = adapter_checksum(Path(adapter.path)) == adapter.sha256
    except OSError:
        intact = False
    if not intact:
        from serving.adapters import adapter_reject

        adapter_reject(adapter_id=adapter.pk)  # unloaded too, if an earlier attempt loaded it
        return None
    return adapter


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

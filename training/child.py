"""python -m training.child JOB_ID

One training job's training and evaluation, in a fresh process of its own (started by the
Celery task with subprocess, never forked), so its memory (GPU memory included) is returned
when it exits. Exit status: 0 done, 3 stopped (cancelled, or its worker died: the last
checkpoint is kept and the next attempt resumes from it), anything else failed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def main(job_id: int) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tutor.settings")
    import django

    django.setup()
    from dataclasses import asdict

    from django.db import transaction

    from serving.adapters import active_adapter_name, adapter_load, adapter_register
    from serving.chat_templates import chat_template_path
    from serving.model_server import base_model_dir
    from serving.models import AdapterVersion
    from training.evaluate import heldout_losses, sample_replies
    from training.jobs import State, job_progress, job_transition
    from training.models import TrainingJob
    from training.recipe import TrainConfig, TrainingStopped, run

    job = TrainingJob.objects.select_related("dataset", "adapter").get(pk=job_id)
    parent = os.getppid()
    work = Path(job.work_dir)
    base = str(base_model_dir())
    config = TrainConfig(
        base_model=base,
        train_file=job.dataset.train_path,
        eval_file=job.dataset.eval_path or None,
        # One folder per attempt: a registered adapter's files are never overwritten by a later one.
        output_dir=str(work / f"adapter-{job.attempts}"),
        work_dir=str(work / "checkpoints"),
        **job.overrides,
    )
    stop = {"now": False}

    def on_log(line: dict) -> None:
        stop["now"] = job_progress(job_id=job_id, line=line) or stop["now"]

    def orphaned() -> bool:
        return os.getppid() != parent  # the worker died; a resumed attempt takes over

    def should_stop() -> bool:
        return stop["now"] or orphaned()

    adapter = registered_adapter(job)
    if adapter is None:
        try:
            result = run(config, on_log=on_log, should_stop=should_stop)
        except TrainingStopped:
            return 3
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
        job_transition(
            job_id=job_id,
            to=State.EVALUATING,
            from_states=(State.TRAINING,),
            message=f"{adapter.name} was trained before the worker stopped; evaluating it",
        )
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    train_metrics = {
        k: v for k, v in adapter.metrics.items() if not k.endswith("_loss") or k in ("train_loss", "eval_loss")
    }
    evaluation: dict = {"adapter_id": adapter.id, "train": train_metrics}
    if config.eval_file and not orphaned():
        active = AdapterVersion.objects.filter(course_id=job.course_id, status="active").first()
        candidates = {"base_loss": None, "candidate_loss": adapter.path}
        if active:
            candidates["active_loss"] = active.path
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
        try:
            adapter_load(adapter)
            current = active_adapter_name(course_id=job.course_id) or "base"
            from django.conf import settings

            evaluation["samples"] = sample_replies(
                eval_file=config.eval_file,
                models={
                    "candidate": adapter.name,
                    "current": current if current != "base" else settings.MODEL_SERVED_NAME,
                },
            )
        except Exception as exc:  # the replies are for people; the gate does not need them
            evaluation["samples_error"] = str(exc)[:300]
    if orphaned():
        return 3
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

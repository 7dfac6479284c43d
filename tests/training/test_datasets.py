"""Dataset export: format, what goes in and what stays out, the split, validation, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.support.chat import conversation_for, exchange, member
from training.datasets import EmptyDataset, TrainingNotAllowed, dataset_export, report_lines
from training.models import DatasetExample, DatasetExport
from tutor.models import ReviewDecision, Role, TutorSettings
from tutor.review import reply_review_update
from tutor.services import training_consent_set, training_opt_out_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def course_setup(demo_model):
    teacher = member("t1", role=Role.TEACHER, name="Tess Teacher")
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)
    return teacher


def lines(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def approve(teacher, reply, correction: str = "", decision=ReviewDecision.APPROVED):
    return reply_review_update(reviewer=teacher, message_id=reply.id, correction=correction, decision=decision)


def test_corrections_replace_replies_and_unapproved_turns_carry_weight_zero(course_setup, tmp_path):
    teacher = course_setup
    student = member("s1", name="Sam Student")
    conversation = conversation_for(student)
    _, first = exchange(conversation, "What is 2 + 2?", "It is 5.")
    _, second = exchange(conversation, "Why?", "Because adding two twos gives four.")
    exchange(conversation, "Thanks! and 3 + 3?", "Six.")
    approve(teacher, first, decision=ReviewDecision.REJECTED)
    approve(teacher, second, correction="Two plus two is four: count two, then two more.")
    # the third reply is not reviewed: the example ends at the last approved reply

    export = dataset_export(course=teacher.course, out=tmp_path / "d.jsonl", eval_fraction=0)
    (example,) = lines(tmp_path / "d.jsonl")
    roles = [(m["role"], m.get("weight")) for m in example["messages"]]
    assert roles == [("system", None), ("user", None), ("assistant", 0), ("user", None), ("assistant", None)]
    assert example["messages"][2]["content"] == "It is 5."
    assert example["messages"][-1]["content"] == "Two plus two is four: count two, then two more."
    assert "Six" not in json.dumps(example)
    row = DatasetExample.objects.get(export=export)
    assert row.provenance == [
        {"message_id": first.id, "source": "context"},
        {"message_id": second.id, "source": "teacher_corrected"},
    ]
    assert row.tokens > 0 and export.report["kept"] == {"train": 1, "eval": 0}


def test_only_consented_courses_and_students_who_did_not_opt_out(course_setup, tmp_path):
    teacher = course_setup
    stays, leaves = member("s1"), member("s2")
    for student, text in ((stays, "What is a prime number?"), (leaves, "What is a composite number?")):
        _, reply = exchange(conversation_for(student), text, "A good question: let us look at divisors.")
        approve(teacher, reply, correction=f"Answer to: {text}")
    training_opt_out_set(membership=leaves, opted_out=True)

    export = dataset_export(course=teacher.course, out=tmp_path / "d.jsonl", eval_fraction=0)
    text = (tmp_path / "d.jsonl").read_text()
    assert "prime" in text and "composite" not in text
    assert export.report["skipped_conversations"]["student_opted_out"] == 1

    training_consent_set(course=teacher.course, actor=teacher, allowed=False)
    with pytest.raises(TrainingNotAllowed):
        dataset_export(course=teacher.course, out=tmp_path / "e.jsonl")


def explanation(topic: str, turn: int) -> str:
    """A long, topic-specific corrected reply (near-duplicate detection works on word 5-grams)."""
    return f"Here is how {topic} works, part {turn}: " + " ".join(f"{topic}-idea-{i}" for i in range(100))


def test_duplicates_are_dropped_and_the_split_keeps_conversations_whole(course_setup, tmp_path):
    teacher = course_setup
    topics = ["photosynthesis", "mitosis", "osmosis", "respiration", "enzymes", "diffusion", "evolution", "ecology"]
    for index, topic in enumerate(topics):
        conversation = conversation_for(member(f"s{index}"))
        for turn in range(2):
            _, reply = exchange(conversation, f"Explain {topic}, part {turn}", f"{topic} step {turn}")
            approve(teacher, reply, correction=explanation(topic, turn))
    # an exact duplicate of the first conversation, and a near duplicate (one word differs)
    for question_suffix in ("", " please"):
        conversation = conversation_for(member(f"dup{question_suffix}"))
        for turn in range(2):
            suffix = question_suffix if turn == 1 else ""
            _, reply = exchange(
                conversation, f"Explain photosynthesis, part {turn}{suffix}", f"photosynthesis step {turn}"
            )
            approve(teacher, reply, correction=explanation("photosynthesis", turn))

    export = dataset_export(course=teacher.course, out=tmp_path / "d.jsonl", eval_fraction=0.25, seed=3)
    assert export.report["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}
    train, held_out = lines(tmp_path / "d.jsonl"), lines(tmp_path / "d.eval.jsonl")
    assert len(train) + len(held_out) == len(topics) and len(held_out) == 2
    rows = DatasetExample.objects.filter(export=export)
    assert {r.split for r in rows} == {"train", "eval"}
    assert rows.values("conversation_id").distinct().count() == rows.count()  # one side per conversation
    again = dataset_export(course=teacher.course, out=tmp_path / "again.jsonl", eval_fraction=0.25, seed=3)
    assert set(again.examples.filter(split="eval").values_list("conversation_id", flat=True)) == set(
        rows.filter(split="eval").values_list("conversation_id", flat=True)
    )


def test_validation_shortens_a_long_question_drops_a_reply_too_long_and_reports_both(course_setup, tmp_path, settings):
    teacher = course_setup
    long_question = "Tell me about cells: " + " ".join(f"cell-fact-{i}" for i in range(250))
    cases = [
        ("short", "Tell me about cells.", "Cells are units."),
        ("long-question", long_question, "Cells are the units of life."),
        ("long-reply", "And tissues?", "Tissues: " + " ".join(f"tissue-fact-{i}" for i in range(250))),
    ]
    for name, question, answer in cases:
        _, reply = exchange(conversation_for(member(name)), question, "Let me see.")
        approve(teacher, reply, correction=answer)
    settings.TRAINING_MAX_SEQ_TOKENS = 600

    export = dataset_export(course=teacher.course, out=tmp_path / "d.jsonl", eval_fraction=0)
    assert export.report["dropped"] == {"too_long": 1}  # the trained reply alone exceeds the limit
    assert export.report["shortened"] == {"student_message_shortened": 1}
    assert export.report["kept"]["train"] == 2
    assert export.report["tokens"]["max"] <= 600
    shortened = next(row for row in lines(tmp_path / "d.jsonl") if "cell-fact-0 " in row["messages"][1]["content"])
    question = shortened["messages"][1]["content"]
    assert "[…]" in question and question.endswith("cell-fact-249") and len(question) < len(long_question)
    assert shortened["messages"][2]["content"] == "Cells are the units of life."  # never cut
    estimate = export.report["estimate"]
    assert estimate["steps"] >= settings.TRAINING_MIN_STEPS and estimate["seconds"] > 0
    report_file = json.loads((tmp_path / "d.report.json").read_text())
    assert report_file["export_id"] == export.id and report_file["dropped"] == {"too_long": 1}
    words = "\n".join(report_lines(export.report))
    assert "shortened to fit 600 tokens (student message shortened): 1" in words
    assert "the trained reply alone exceeds 600 tokens): 1" in words and "estimated time:" in words


def test_command_takes_the_lms_context_id_and_prints_the_report(course_setup, tmp_path, capsys):
    teacher = course_setup
    _, reply = exchange(conversation_for(member("s1")), "What is DNA?", "A molecule.")
    approve(teacher, reply, correction="DNA is the molecule that carries genetic instructions.")

    call_command("export_dataset", "--course", "course-1", "--out", str(tmp_path / "x.jsonl"), "--eval-fraction", "0")
    out = capsys.readouterr().out
    assert "kept: 1 training, 0 held-out examples" in out and "estimated time:" in out
    assert DatasetExport.objects.get().train_path == str(tmp_path / "x.jsonl")
    assert "genetic instructions" in (tmp_path / "x.jsonl").read_text()

    with pytest.raises(CommandError, match="No course"):
        call_command("export_dataset", "--course", "no-such-course", "--out", str(tmp_path / "y.jsonl"))


def test_nothing_approved_is_a_clear_error(course_setup, tmp_path):
    teacher = course_setup
    exchange(conversation_for(member("s1")), "Hi", "Hello!")
    with pytest.raises(EmptyDataset) as refused:
        dataset_export(course=teacher.course, out=tmp_path / "d.jsonl")
    assert (refused.value.code, refused.value.status) == ("dataset_empty", 409)
    assert refused.value.message == (
        "No exchange of this course is ready for training yet: teachers approve replies on the review page."
    )
    report = refused.value.detail["report"]
    assert (report["conversations"], report["skipped_conversations"]["no_approved_reply"]) == (1, 1)
    assert not (tmp_path / "d.jsonl").exists()
    assert not DatasetExport.objects.exists()
    assert TutorSettings.objects.get(course=teacher.course).training_consent

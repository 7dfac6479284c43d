"""The evaluation gate checks what teachers care about: besides held-out loss, the candidate
answers held-out questions through vLLM, scored against the teachers' replies with chrF
(sacrebleu). A candidate whose replies failed, are empty or score below the current tutor is
never promoted automatically, and the administrator sees why, with the numbers side by side."""

from __future__ import annotations

import json
import re

import pytest
import requests

from serving.models import AdapterVersion
from tests.support.db import database_url_for_tests
from tests.support.proxy import model_server_proxy
from tests.support.review import review_enter
from tests.support.servers import celery_worker
from tests.support.training import corrected_course, wait_for
from training.evaluate import gate_questions, gate_replies, replies_score
from training.jobs import gate_passes, training_job_start
from training.models import TrainingJob
from tutor.models import Course


def scored(*, chrf: float, samples: int = 5, failed: int = 0, empty: int = 0, errors: list | None = None) -> dict:
    return {"samples": samples, "failed": failed, "empty": empty, "errors": errors or [], "chrf": chrf}


def evaluation(*, candidate: dict, current: dict | None = None, **losses) -> dict:
    losses = losses or {"base_loss": 2.0, "candidate_loss": 0.9}
    return {**losses, "replies": {"candidate": candidate, "current": current or scored(chrf=20.0)}}


@pytest.mark.fast
def test_the_gate_passes_a_candidate_better_on_loss_and_on_the_teachers_wording(settings):
    settings.TRAINING_GATE_MARGIN, settings.TRAINING_GATE_CHRF_MARGIN = 0.02, 0
    decision = gate_passes(evaluation=evaluation(candidate=scored(chrf=61.5)))
    assert decision.passed
    assert decision.reasons == (
        "held-out loss 0.9 vs 2 (the base model)",
        "chrF 61.5 vs 20.0 (current tutor) over 5 replies",
    )
    # Against the adapter in service, not the base, when there is one.
    assert gate_passes(
        evaluation=evaluation(candidate=scored(chrf=30), candidate_loss=0.97, active_loss=1.0, base_loss=2.0)
    ).passed
    equal = gate_passes(evaluation=evaluation(candidate=scored(chrf=20.0)))
    assert equal.passed  # at least the current tutor's chrF, with no margin


@pytest.mark.fast
def test_failed_or_empty_sample_replies_block_the_gate_whatever_the_loss(settings):
    settings.TRAINING_GATE_MARGIN = 0.02
    failed = gate_passes(
        evaluation=evaluation(
            candidate=scored(chrf=0.0, failed=5, errors=["The tutor took too long to answer"]),
            current=scored(chrf=0.0, failed=5, errors=["The tutor took too long to answer"]),
        )
    )
    # The case: both sides timed out, the loss was better, and it was promoted anyway.
    assert not failed.passed
    assert failed.reasons == ("5 of 5 sample replies failed (The tutor took too long to answer)",)
    empty = gate_passes(evaluation=evaluation(candidate=scored(chrf=40.0, empty=2)))
    assert not empty.passed and empty.reasons == ("2 of 5 sample replies were empty",)
    could_not = gate_passes(evaluation={"base_loss": 2.0, "candidate_loss": 0.5, "samples_error": "vLLM refused"})
    assert not could_not.passed
    assert could_not.reasons == ("the sample replies could not be produced (vLLM refused)",)
    unscored = gate_passes(evaluation={"base_loss": 2.0, "candidate_loss": 0.5})
    assert not unscored.passed and unscored.reasons == ("no sample replies were scored",)


@pytest.mark.fast
def test_a_lower_chrf_or_too_little_loss_gain_blocks_the_gate(settings):
    settings.TRAINING_GATE_MARGIN, settings.TRAINING_GATE_CHRF_MARGIN = 0.02, 0
    worse = gate_passes(evaluation=evaluation(candidate=scored(chrf=19.9)))
    assert not worse.passed
    assert worse.reasons == ("chrF 19.9 against the teachers' replies is not at least the current tutor's 20.0",)
    settings.TRAINING_GATE_CHRF_MARGIN = 5
    margin = gate_passes(evaluation=evaluation(candidate=scored(chrf=24.0)))
    assert not margin.passed and "not 5 points above the current tutor's 20.0" in margin.summary
    settings.TRAINING_GATE_CHRF_MARGIN = 0
    loss = gate_passes(
        evaluation=evaluation(candidate=scored(chrf=50), candidate_loss=0.99, active_loss=1.0, base_loss=2.0)
    )
    assert not loss.passed
    assert loss.reasons == ("held-out loss 0.99 is not 2% below the adapter in service's 1",)
    both = gate_passes(evaluation=evaluation(candidate=scored(chrf=10, failed=1), base_loss=1.0, candidate_loss=1.0))
    assert not both.passed and len(both.reasons) == 3  # every reason, not just the first
    nothing = gate_passes(evaluation={"base_loss": 2.0})
    assert not nothing.passed and nothing.reasons[0] == "no held-out loss was measured"


@pytest.mark.fast
def test_replies_are_scored_with_sacrebleu_chrf_failures_counting_as_empty():
    expected = ["Add the tens, then the ones: 12 + 34 = 46.", "Add the tens, then the ones: 20 + 17 = 37."]
    perfect = replies_score(expected=expected, replies=[{"reply": e, "error": None} for e in expected])
    assert (perfect["chrf"], perfect["sentence_chrf"], perfect["failed"], perfect["empty"]) == (
        100.0,
        [100.0] * 2,
        0,
        0,
    )
    assert perfect["metric"].startswith("chrF nrefs:1|") and "version:2.6" in perfect["metric"]
    mixed = replies_score(
        expected=expected,
        replies=[{"reply": "", "error": "The tutor took too long to answer"}, {"reply": "  ", "error": None}],
    )
    assert (mixed["failed"], mixed["empty"], mixed["chrf"], mixed["sentence_chrf"]) == (1, 1, 0.0, [0.0, 0.0])
    assert mixed["errors"] == ["The tutor took too long to answer"]
    near = replies_score(expected=expected, replies=[{"reply": "12 + 34 = 46.", "error": None}] * 2)
    assert 0 < near["sentence_chrf"][1] < near["sentence_chrf"][0] < 100


@pytest.mark.fast
def test_held_out_questions_keep_their_own_system_prompt_and_context_turns(tmp_path):
    rows = [
        [
            {"role": "system", "content": "You tutor fractions."},
            {"role": "user", "content": "What is 1/2 + 1/4?"},
            {"role": "assistant", "content": "Think of quarters.", "weight": 0},  # context, not a target
            {"role": "user", "content": "Still stuck."},
            {"role": "assistant", "content": "1/2 is 2/4, so 2/4 + 1/4 = 3/4."},
        ],
        [
            {"role": "system", "content": "You tutor sums."},
            {"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "2 + 3 = 5."},
        ],
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"messages": row}) for row in rows) + "\n")
    questions = gate_questions(eval_file=str(path), limit=20)
    assert [q["expected"] for q in questions] == ["1/2 is 2/4, so 2/4 + 1/4 = 3/4.", "2 + 3 = 5."]
    assert questions[0]["messages"] == [{"role": m["role"], "content": m["content"]} for m in rows[0][:4]]
    assert questions[1]["messages"][0] == {"role": "system", "content": "You tutor sums."}
    assert len(gate_questions(eval_file=str(path), limit=1)) == 1


@pytest.mark.django_db
@pytest.mark.real_model
def test_served_replies_are_scored_and_a_model_vllm_does_not_have_counts_as_failed(tmp_path, vllm_url, settings):
    settings.VLLM_BASE_URL = vllm_url
    system = {"role": "system", "content": "You are a maths tutor."}
    rows = [
        [system, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in (("What is 12 plus 34?", "12 + 34 = 46."), ("What is 20 plus 17?", "20 + 17 = 37."))
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"messages": row}) for row in rows))
    result = gate_replies(
        eval_file=str(path), models={"candidate": "course-0-v404", "current": settings.MODEL_SERVED_NAME}, limit=20
    )
    current, candidate = result["replies"]["current"], result["replies"]["candidate"]
    assert (current["samples"], current["failed"], current["empty"]) == (2, 0, 0)
    assert current["chrf"] > 0 and len(current["sentence_chrf"]) == 2
    assert (candidate["failed"], candidate["chrf"]) == (2, 0.0)  # vLLM answered 404, twice
    assert candidate["errors"] == ["The tutor's model server answered with an error (404)"]
    assert result["samples"][0]["candidate"].startswith("(no reply: ")
    assert result["samples"][0]["current"] and result["samples"][0]["question"] == "What is 12 plus 34?"
    assert not gate_passes(evaluation={"base_loss": 2.0, "candidate_loss": 0.1, **result}).passed


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
@pytest.mark.real_model
def test_a_candidate_whose_sample_replies_fail_is_left_for_an_admin_not_promoted(
    chat_tool, platform, vllm_url, settings
):
    teacher, _ = corrected_course(platform, chat_tool, exchanges=20)
    # As the issue saw: the model server is slow, and every reply to the held-out questions takes
    # longer than the reply timeout (the worker's, so its training child's; loading the adapter
    # is not slowed). The loss alone would pass (a margin of -100%).
    env = {"MODEL_REPLY_TIMEOUT_SECONDS": "1", "TRAINING_GATE_MARGIN": "-1"}
    with (
        model_server_proxy(upstream=vllm_url, reply_delay=3) as slow,
        celery_worker(
            database_url=database_url_for_tests(),
            broker_url=settings.CELERY_BROKER_URL,
            queues="gpu",
            extra_env={**env, "VLLM_BASE_URL": slow},
        ),
    ):
        job = training_job_start(course=teacher.course, overrides={"max_steps": 1, "tokens_per_step": 256, "rank": 4})
        job = wait_for(job, {"promoted", "ready", "failed"})
    assert job.state == "ready", (job.state, job.error, job.evaluation)
    assert job.adapter.status == "candidate"
    assert not AdapterVersion.objects.filter(course=teacher.course, status="active").exists()
    evaluation = job.evaluation
    candidate = evaluation["replies"]["candidate"]
    assert "samples_error" not in evaluation  # the candidate was loaded; its replies are what failed
    assert candidate["samples"] == candidate["failed"] == len(evaluation["samples"]) >= 1
    assert candidate["errors"] == ["The tutor took too long to answer"]
    assert not evaluation["gate"]["passed"]
    reason = (
        f"{candidate['failed']} of {candidate['samples']} sample replies failed (The tutor took too long to answer)"
    )
    assert reason in evaluation["gate"]["reasons"]
    message = job.events.last().message
    assert message.startswith(f"gate not passed: {reason}") and message.endswith(
        "waiting for an administrator's decision"
    )

    # The administrator sees why, with the numbers side by side, and the replies.
    browser = requests.Session()
    page = platform.launch(browser, chat_tool, user="admin").text
    token = re.search(r'name="launch-token" content="([^"]+)"', page).group(1)
    review_enter(browser, chat_tool, token)
    page = browser.get(f"{chat_tool}/review/{teacher.course_id}/training/").text
    verdict = re.search(r'data-testid="gate-verdict">(.*?)</p>', page, re.S).group(1)
    assert "Not passed" in verdict and "sample replies failed" in verdict
    gate = re.search(r'data-testid="gate">(.*?)</table>', page, re.S).group(1)
    assert str(evaluation["base_loss"]) in gate and str(evaluation["candidate_loss"]) in gate
    assert "chrF against the teachers" in gate and str(candidate["chrf"]) in gate
    samples = re.search(r'data-testid="samples">(.*?)</table>', page, re.S).group(1)
    assert "(no reply: The tutor took too long to answer)" in samples
    assert 'name="action" value="promote"' in page  # left for the administrator to decide


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_the_training_page_shows_the_gate_side_by_side_with_its_reasons(tool, platform):
    browser = requests.Session()
    page = platform.launch(browser, tool, user="admin").text
    token = re.search(r'name="launch-token" content="([^"]+)"', page).group(1)
    review_enter(browser, tool, token)
    course = Course.objects.get()
    current, candidate = scored(chrf=48.25), scored(chrf=31.5, failed=1, empty=1, errors=["The tutor took too long"])
    evaluation = {
        "base_loss": 2.5,
        "active_loss": 0.75,
        "candidate_loss": 0.5,
        "replies": {"current": {**current, "metric": "chrF nrefs:1|version:2.6.0"}, "candidate": candidate},
        "samples": [
            {
                "question": "What is 12 plus 34?",
                "context_turns": 2,
                "expected": "Add the tens, then the ones: 12 + 34 = 46.",
                "candidate": "(no reply: The tutor took too long)",
                "candidate_chrf": 0.0,
                "current": "Add the tens: 46.",
                "current_chrf": 52.5,
            }
        ],
    }
    evaluation["gate"] = gate_passes(evaluation=evaluation).as_dict()
    TrainingJob.objects.create(course=course, state="ready", evaluation=evaluation)
    page = browser.get(f"{tool}/review/{course.pk}/training/").text
    verdict = re.search(r'data-testid="gate-verdict">(.*?)</p>', page, re.S).group(1)
    assert "Not passed" in verdict
    for reason in ("1 of 5 sample replies failed (The tutor took too long)", "1 of 5 sample replies were empty"):
        assert reason in verdict
    gate = re.search(r'data-testid="gate">(.*?)</table>', page, re.S).group(1)
    cells = {
        re.sub(r"<.*?>|&#x27;", "", row[0]): [re.sub(r"<.*?>", "", c) for c in row[1:]]
        for row in (re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", gate, re.S))
        if row and row[0]
    }
    # Base model | adapter in service | new adapter: the current tutor is the adapter in service.
    assert cells["Held-out loss (lower is better)"] == ["2.5", "0.75", "0.5"]
    assert cells["chrF against the teachers replies (higher is better)"] == ["–", "48.25", "31.5"]
    assert cells["Sample replies that failed"] == ["–", "0", "1"]
    assert cells["Sample replies that were empty"] == ["–", "0", "1"]
    samples = re.search(r'data-testid="samples">(.*?)</table>', page, re.S).group(1)
    assert "after 2 earlier turns" in samples and "chrF 52.5" in samples and "chrF 0.0" in samples

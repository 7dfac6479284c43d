"""Personal data across a conversation (issue 10, items 1, 3, 4), through the real app: LTI
launches signed by the test platform, the chat services, the review pages and APIs over HTTP,
the dataset export, on PostgreSQL.

The tutor's replies are given (`tests.support.chat.exchange` stores them the way a streamed or
whole reply is stored, through `_reply_finish`): the small real model does not reliably repeat
a student's id, and these tests are about what is stored and shown when it does.
"""

from __future__ import annotations

import html
import importlib
import re
from pathlib import Path

import pytest
import requests

from tests.support.chat import conversation_for, exchange
from tests.support.review import review_enter
from training.models import DatasetExport
from tutor.models import Conversation, Flag, Membership, Message, ReplyReview

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

STUDENT_ID, BIRTHDAY, USERNAME = "20231847", "14/03/2010", "reader_kid42"


def launched(platform, base, user: str, **claims) -> tuple[dict, requests.Session, str]:
    browser = requests.Session()
    response = platform.launch(browser, base, user=user, **claims)
    assert response.status_code == 200, response.text[:500]
    token = re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)
    return {"Authorization": f"Bearer {token}"}, browser, token


def member_of(user_sub: str) -> Membership:
    from tutor.services import pseudonym_for

    issuer = Membership.objects.first().course.lms_issuer
    return Membership.objects.get(person__pseudonym=pseudonym_for(issuer=issuer, subject=user_sub))


def messages_of(page: str) -> str:
    """A review page's messages, their badges and forms (the page's header names the student)."""
    return html.unescape(page[page.index("<article") :])


def review_session(browser: requests.Session, tool: str, token: str) -> requests.Response:
    entered = review_enter(browser, tool, token)
    assert entered.status_code == 200, entered.text[:300]
    return entered


@pytest.fixture
def course(tool, platform):
    teacher_auth, teacher_browser, teacher_token = launched(platform, tool, "teacher")
    launched(platform, tool, "student", name="Aisha Khan", given_name="Aisha", family_name="Khan")
    admin_auth, _, _ = launched(platform, tool, "admin")
    return {
        "teacher": teacher_auth,
        "teacher_browser": teacher_browser,
        "teacher_token": teacher_token,
        "admin": admin_auth,
        "student": member_of("devlms-student-1"),
    }


def test_values_found_anywhere_in_a_conversation_leave_every_message_replies_and_exports_included(
    tool, course, demo_model
):
    conversation = conversation_for(course["student"])
    _, first_reply = exchange(
        conversation,
        f"Hi, my student number is {STUDENT_ID} and I was born on {BIRTHDAY}. What is a prime number?",
        f"Hello! I have noted {STUDENT_ID} and {BIRTHDAY}. A prime number has exactly two factors.",
    )
    # The reading-app name is used by both before the student says it is their username...
    asked, used = exchange(
        conversation,
        f"Can you check {USERNAME}'s reading level?",
        f"I can't open {USERNAME}'s account, but we can practise reading here.",
    )
    # ...which they say only now: the two earlier messages lose it too.
    exchange(conversation, f"my username for the reading app: {USERNAME}", "Thanks! Now, what is 7 × 8?")

    stored = {m.id: m for m in Message.objects.filter(conversation=conversation)}
    assert stored[first_reply.id].content_scrubbed == (
        "Hello! I have noted <STUDENT_ID> and <DATE_OF_BIRTH>. A prime number has exactly two factors."
    )
    assert stored[asked.id].content_scrubbed == "Can you check <USERNAME>'s reading level?"
    assert stored[used.id].content_scrubbed == "I can't open <USERNAME>'s account, but we can practise reading here."
    assert stored[used.id].pii_found == {"USERNAME": 1}
    assert USERNAME in stored[used.id].content  # the student still sees what was said

    assert requests.put(
        f"{tool}/api/v1/course/training-consent/", json={"allowed": True}, headers=course["teacher"]
    ).json() == {"allowed": True}
    replies = Message.objects.filter(conversation=conversation, sender="assistant").order_by("id")
    for index, reply in enumerate(replies):
        body = {"decision": "approved"}
        if index == 0:  # the teacher's correction repeats the id too
            body["correction"] = f"Well done! Your number {STUDENT_ID} stays private. A prime has two factors."
        reviewed = requests.patch(f"{tool}/api/v1/review/replies/{reply.id}/", json=body, headers=course["teacher"])
        assert reviewed.status_code == 200, reviewed.text
    assert ReplyReview.objects.get(message=replies[0]).correction_scrubbed.startswith("Well done! Your number <")

    api = requests.get(f"{tool}/api/v1/review/conversations/{conversation.id}/", headers=course["teacher"])
    listing = requests.get(f"{tool}/api/v1/review/conversations/", headers=course["teacher"])
    review_session(course["teacher_browser"], tool, course["teacher_token"])
    page = course["teacher_browser"].get(f"{tool}/review/{conversation.course_id}/conversations/{conversation.id}/")
    assert page.status_code == 200 and "Thanks! Now, what is 7 × 8?" in html.unescape(page.text)
    exported = requests.post(
        f"{tool}/api/v1/course/dataset-exports/", json={"eval_fraction": 0}, headers=course["admin"]
    )
    assert exported.status_code == 201, exported.text
    dataset = Path(DatasetExport.objects.get(pk=exported.json()["id"]).train_path).read_text()
    assert "A prime has two factors" in dataset and "<USERNAME>" in dataset

    everything_teachers_and_training_see = {
        "scrubbed messages": "\n".join(Message.objects.values_list("content_scrubbed", flat=True)),
        "corrections": "\n".join(ReplyReview.objects.values_list("correction_scrubbed", flat=True)),
        "title": Conversation.objects.get(pk=conversation.pk).title,
        "review API": api.text + listing.text,
        # (its header names the student, for teachers, by design: REVIEW_SHOW_NAMES)
        "review page's messages": messages_of(page.text),
        "dataset": dataset,
    }
    for where, text in everything_teachers_and_training_see.items():
        for value in (STUDENT_ID, BIRTHDAY, USERNAME, "Aisha", "Khan"):
            assert value not in text, f"{value!r} found in the {where}"


def test_a_withheld_reply_and_a_teachers_reason_reach_the_flag_tooltip_scrubbed(tool, course):
    conversation = conversation_for(course["student"])
    exchange(conversation, f"my student number is {STUDENT_ID}, can you read my essay?", "Of course, paste it here.")
    _, withheld = exchange(
        conversation,
        "Here it is.",
        f"Aisha Khan ({STUDENT_ID}), this essay is shit, email aisha.khan@oakfield.sch.uk to complain.",
    )
    assert withheld.guardrail == "unsafe_output"
    flag = Flag.objects.get(message=withheld)
    assert flag.reason.startswith("The tutor's reply contained unsafe content; it was withheld. Original reply: ")
    assert "<PERSON>" in flag.reason and "<EMAIL_ADDRESS>" in flag.reason and "<STUDENT_ID>" in flag.reason

    browser = course["teacher_browser"]
    review_session(browser, tool, course["teacher_token"])
    course_id = conversation.course_id
    _, answered = exchange(conversation, "ok what is a thesis?", "The main claim your essay argues.")
    flagged = browser.post(
        f"{tool}/review/{course_id}/replies/{answered.id}/",
        data={
            "action": "flag",
            "reason": f"Aisha Khan gave her student number {STUDENT_ID} again",
            "csrfmiddlewaretoken": browser.cookies.get("csrftoken", ""),
        },
        headers={"Referer": tool + "/"},
    )
    assert flagged.status_code == 200, flagged.text[:300]
    page = messages_of(browser.get(f"{tool}/review/{course_id}/conversations/{conversation.id}/").text)
    tooltips = re.findall(r'class="badge flag" title="([^"]*)"', page)
    assert len(tooltips) == 2, tooltips
    for value in ("Aisha", "Khan", STUDENT_ID, "aisha.khan@oakfield.sch.uk"):
        assert value not in page
        assert not Flag.objects.filter(reason__icontains=value).exists()


def test_the_migration_scrubs_flag_reasons_stored_before(tool, course):
    conversation = conversation_for(course["student"])
    _, reply = exchange(conversation, f"my student number is {STUDENT_ID}", "Thanks, noted.")
    raw = (
        "The tutor's reply contained unsafe content; it was withheld. Original reply: Aisha Khan, "
        + (f"{STUDENT_ID} " + "word " * 60)[:200]
    )
    old = Flag.objects.create(
        course_id=conversation.course_id, conversation=conversation, message=reply, category="unsafe_output", reason=raw
    )
    teacher = member_of("devlms-teacher-1")
    by_teacher = Flag.objects.create(
        course_id=conversation.course_id,
        conversation=conversation,
        message=reply,
        category="teacher",
        reason="Aisha Khan seems upset",
        raised_by=teacher.person,
    )
    untouched = Flag.objects.create(
        course_id=conversation.course_id, conversation=conversation, message=reply, category="self_harm",
        reason="The student may be at risk of self-harm.",
    )  # fmt: skip
    from django.apps import apps

    migration = importlib.import_module("tutor.migrations.0005_flag_reasons_scrubbed")
    migration._scrub_existing_reasons(apps, None)

    for flag in (old, by_teacher, untouched):
        flag.refresh_from_db()
    assert old.reason.startswith(
        "The tutor's reply contained unsafe content; it was withheld. Original reply: <PERSON>, <STUDENT_ID> word"
    )
    assert old.reason.endswith(" …")  # the last, maybe half, word of the old cut is dropped
    assert by_teacher.reason == "<PERSON> seems upset"
    assert untouched.reason == "The student may be at risk of self-harm."


def test_the_correction_box_and_the_review_api_show_the_scrubbed_correction(tool, course):
    conversation = conversation_for(course["student"])
    _, reply = exchange(conversation, f"my student number is {STUDENT_ID}. what is osmosis?", "Water moving.")
    correction = f"Well done Aisha Khan! Osmosis: water crosses a membrane. Your number {STUDENT_ID} is private."
    browser = course["teacher_browser"]
    review_session(browser, tool, course["teacher_token"])
    course_id = conversation.course_id
    url = f"{tool}/review/{course_id}/conversations/{conversation.id}/"

    def save(text: str) -> None:
        response = browser.post(
            f"{tool}/review/{course_id}/replies/{reply.id}/",
            data={"action": "save", "correction": text, "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")},
            headers={"Referer": tool + "/"},
        )
        assert response.status_code == 200, response.text[:300]

    save(correction)
    page = messages_of(browser.get(url).text)
    box = html.unescape(
        re.search(r'<textarea id="correction-\d+" name="correction"[^>]*>(.*?)</textarea>', page, re.S)[1]
    )
    assert box == "Well done <PERSON>! Osmosis: water crosses a membrane. Your number <STUDENT_ID> is private."
    assert "Aisha" not in page and STUDENT_ID not in page

    save(box)  # saving the form again, unchanged, keeps the correction as it was
    assert ReplyReview.objects.get(message=reply).correction == correction
    api = requests.get(f"{tool}/api/v1/review/conversations/{conversation.id}/", headers=course["teacher"]).json()
    (reviewed,) = [m for m in api if m["id"] == reply.id]
    assert reviewed["review"]["correction"] == box
    patched = requests.patch(  # the API's round trip (read, then send the correction back) too
        f"{tool}/api/v1/review/replies/{reply.id}/",
        json={"correction": box, "helpful": True},
        headers=course["teacher"],
    )
    assert patched.status_code == 200 and patched.json()["review"]["correction"] == box
    assert ReplyReview.objects.get(message=reply).correction == correction


def test_a_later_pass_never_brings_back_what_an_erased_classmates_name_removed(tool, platform, course):
    from devlms.platform import LIS, DevUser
    from tutor.services import person_erase

    classmate = DevUser("classmate", "devlms-student-9", "Ben Okafor", (LIS + "membership#Learner",))
    launched(platform, tool, classmate)
    conversation = conversation_for(course["student"])
    asked, _ = exchange(conversation, "ben okafor says reader_kid42 is a good name for the app", "It is a fine name.")
    assert Message.objects.get(pk=asked.pk).content_scrubbed == "<PERSON> says reader_kid42 is a good name for the app"

    assert person_erase(issuer=platform.issuer, subject=classmate.sub, via="command")  # the roster forgets Ben
    exchange(conversation, f"my username for the reading app: {USERNAME}", "Thanks for telling me.")

    assert Message.objects.get(pk=asked.pk).content_scrubbed == "<PERSON> says <USERNAME> is a good name for the app"
    assert Conversation.objects.get(pk=conversation.pk).title == "<PERSON> says <USERNAME> is a good name for the app"

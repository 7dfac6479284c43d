"""Teacher review through the API and the pages: access rules, writes and their audit trail."""

from __future__ import annotations

import copy
import re

import pytest
import requests

from devlms.platform import LIS, DevUser
from tests.support.chat import conversation_for, exchange
from tests.support.review import review_enter
from tutor.models import Flag, Membership, ReplyReview, ReviewEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

OTHER_COURSE = {"id": "course-99", "title": "Chemistry 2", "label": "CHEM2"}
SECOND_STUDENT = DevUser("student2", "devlms-student-2", "Bea Second", (LIS + "membership#Learner",))


def launched(platform, base, user="student", **overrides) -> tuple[dict, requests.Session]:
    browser = requests.Session()
    response = platform.launch(browser, base, user=user, **overrides)
    assert response.status_code == 200, response.text[:500]
    token = re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)
    return {"Authorization": f"Bearer {token}"}, browser, token


def membership_of(sub: str, context: str = "course-42") -> Membership:
    from tutor.services import pseudonym_for

    return Membership.objects.get(
        course__lms_context_id=context,
        person__pseudonym=pseudonym_for(issuer=Membership.objects.first().course.lms_issuer, subject=sub),
    )


@pytest.fixture
def two_courses(tool, platform):
    teacher_auth, teacher_browser, teacher_token = launched(platform, tool, "teacher")
    student_auth, _, _ = launched(platform, tool, "student")
    second_auth, _, _ = launched(platform, tool, SECOND_STUDENT)
    launched(platform, tool, "student", course=OTHER_COURSE)
    student = membership_of("devlms-student-1")
    second = membership_of("devlms-student-2")
    other = membership_of("devlms-student-1", "course-99")
    _, reply = exchange(conversation_for(student), "What is osmosis?", "Water moving across a membrane.")
    _, second_reply = exchange(conversation_for(second), "What is diffusion?", "Particles spreading out.")
    _, other_reply = exchange(conversation_for(other), "What is a mole?", "6.02e23 particles.")
    return {
        "teacher": teacher_auth,
        "teacher_browser": teacher_browser,
        "teacher_token": teacher_token,
        "student": student_auth,
        "second": second_auth,
        "reply": reply,
        "second_reply": second_reply,
        "other_reply": other_reply,
    }


def test_students_cannot_review_and_cannot_read_each_others_conversations(tool, two_courses):
    s = two_courses
    assert requests.get(f"{tool}/api/v1/review/conversations/", headers=s["student"]).status_code == 403
    response = requests.patch(
        f"{tool}/api/v1/review/replies/{s['reply'].id}/", json={"decision": "approved"}, headers=s["student"]
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    theirs = s["second_reply"].conversation_id
    assert requests.get(f"{tool}/api/v1/conversations/{theirs}/", headers=s["student"]).status_code == 404
    assert (
        requests.post(
            f"{tool}/api/v1/messages/{s['second_reply'].id}/rating/", json={"value": 1}, headers=s["student"]
        ).status_code
        == 404
    )
    assert not ReplyReview.objects.exists()


def test_teachers_review_their_course_only(tool, two_courses):
    s = two_courses
    listed = requests.get(f"{tool}/api/v1/review/conversations/", headers=s["teacher"]).json()
    assert {c["id"] for c in listed} == {s["reply"].conversation_id, s["second_reply"].conversation_id}
    other = s["other_reply"]
    assert (
        requests.get(f"{tool}/api/v1/review/conversations/{other.conversation_id}/", headers=s["teacher"]).status_code
        == 404
    )
    assert (
        requests.patch(
            f"{tool}/api/v1/review/replies/{other.id}/", json={"decision": "approved"}, headers=s["teacher"]
        ).status_code
        == 404
    )
    assert not ReplyReview.objects.filter(message=other).exists()


def test_review_writes_are_recorded_with_who_and_when(tool, two_courses):
    s = two_courses
    url = f"{tool}/api/v1/review/replies/{s['reply'].id}/"
    body = {"helpful": True, "correct": False, "correction": "Osmosis: water crosses a membrane toward more solute."}
    response = requests.patch(url, json={**body, "decision": "approved"}, headers=s["teacher"])
    assert response.status_code == 200, response.text
    assert response.json()["review"]["decision"] == "approved"
    assert requests.patch(url, json={"flagged": True}, headers=s["teacher"]).json()["flagged"] is True
    assert requests.patch(url, json={"flagged": False}, headers=s["teacher"]).json()["flagged"] is False

    teacher = membership_of("devlms-teacher-1")
    events = list(ReviewEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["reply_review", "flag", "unflag"]
    assert all(e.actor_id == teacher.person_id and e.created_at for e in events)
    assert events[0].detail["decision"] == "approved" and events[0].detail["correct"] is False
    assert "Osmosis" not in str(events[0].detail)  # the audit trail keeps that a correction changed, not its text
    flag = Flag.objects.get(message=s["reply"])
    assert flag.raised_by_id == teacher.person_id and flag.resolved_by_id == teacher.person_id


def test_review_pages_follow_the_same_rules(tool, platform, two_courses):
    s = two_courses
    teacher = s["teacher_browser"]
    entered = review_enter(teacher, tool, s["teacher_token"])
    assert entered.status_code == 200 and "Osmosis" not in entered.text
    course_id = s["reply"].conversation.course_id
    assert entered.url.endswith(f"/review/{course_id}/")
    assert "What is osmosis?" in entered.text and "What is a mole?" not in entered.text
    other_course = s["other_reply"].conversation.course_id
    assert teacher.get(f"{tool}/review/{other_course}/").status_code == 404
    assert (
        teacher.get(f"{tool}/review/{other_course}/conversations/{s['other_reply'].conversation_id}/").status_code
        == 404
    )
    assert (
        teacher.get(f"{tool}/review/{course_id}/conversations/{s['other_reply'].conversation_id}/").status_code == 404
    )

    assert requests.get(f"{tool}/review/{course_id}/").status_code == 401  # no launch at all

    _, student_browser, student_token = launched(platform, tool, "student")
    assert review_enter(student_browser, tool, student_token).status_code == 403
    assert student_browser.get(f"{tool}/review/{course_id}/").status_code == 403
    # A real CSRF pair, from the form the tool renders for this reply (the cookie and the form's
    # token): Django's CSRF check passes with it, so the role check is what has to refuse.
    page = teacher.get(f"{tool}/review/{course_id}/conversations/{s['reply'].conversation_id}/")
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    student_browser.cookies.set_cookie(copy.copy(next(c for c in teacher.cookies if c.name == "csrftoken")))
    reply_url = f"{tool}/review/{course_id}/replies/{s['reply'].id}/"
    refused = student_browser.post(
        reply_url,
        data={"action": "approve", "csrfmiddlewaretoken": form_token},
        headers={"Referer": tool + "/"},
        allow_redirects=False,  # a write that went through answers 302 to a page that refuses a student
    )
    assert refused.status_code == 403
    assert re.search(r'data-testid="error-code">forbidden<', refused.text), refused.text[:500]
    assert "Only the course&#x27;s teachers can review its conversations." in refused.text
    assert not ReplyReview.objects.exists()

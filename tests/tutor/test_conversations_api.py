"""A student's own conversations through the API: started by their first message (a refused one
stores nothing), renamed (the title scrubbed: teachers see it), deleted as erasure deletes, except
while an urgent safety flag on it is unresolved; a reply cut short can be asked for again.

No model server runs: nothing listens on the model's port, so a reply fails the way it does when
vLLM is down, and a screened message is answered without the model."""

from __future__ import annotations

import re

import pytest
import requests

from devlms.platform import LIS, DevUser
from tests.tutor.test_alerts import SELF_HARM
from tests.tutor.test_chat_api import sse_events
from tutor.models import Conversation, ErasureRecord, Flag, FlagState, Message, MessageStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

BOB = DevUser("bob", "sub-bob", "Bob", (LIS + "membership#Learner",))


@pytest.fixture
def offline_model(settings):
    settings.VLLM_BASE_URL = "http://127.0.0.1:9"  # nothing listens there


def launch(platform, base: str, user="student") -> dict:
    page = platform.launch(requests.Session(), base, user=user)
    assert page.status_code == 200, page.text[:500]
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', page.text).group(1)}


def start(base: str, auth: dict, content: str) -> requests.Response:
    return requests.post(base + "/api/v1/conversations/messages/stream/", json={"content": content}, headers=auth)


def test_the_first_message_starts_the_conversation_and_a_refused_one_stores_nothing(
    tool, platform, offline_model, settings
):
    auth = launch(platform, tool)
    too_long = start(tool, auth, "word " * 999 + "word")  # 4,999 characters
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert error["code"] == "message_too_long" and error["detail"]["limit"] == settings.CHAT_MAX_MESSAGE_CHARS
    assert "4999 characters long; the limit is 4000" in error["message"]
    assert start(tool, auth, "   \n ").status_code == 400
    assert Conversation.objects.count() == 0

    streamed = start(tool, auth, "What is a prime number?")
    assert streamed.status_code == 200
    events = sse_events(streamed)
    assert [name for name, _ in events] == ["start", "error"]  # the model is down: the question is kept
    conversation = Conversation.objects.get()
    assert events[0][1]["conversation_id"] == conversation.id
    assert conversation.title == "What is a prime number?"
    assert [(m.sender, m.status) for m in conversation.messages.all()] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    listed = requests.get(tool + "/api/v1/conversations/", headers=auth).json()
    assert [row["id"] for row in listed] == [conversation.id]


def test_a_student_renames_their_conversation_and_the_title_is_scrubbed(tool, platform, offline_model):
    auth = launch(platform, tool)
    start(tool, auth, "What is a prime number?")
    conversation = Conversation.objects.get()
    path = f"{tool}/api/v1/conversations/{conversation.id}/"

    renamed = requests.patch(
        path, json={"title": "  Primes, for Ada Student's test (ada@school.example)  "}, headers=auth
    )
    assert renamed.status_code == 200, renamed.text
    title = renamed.json()["title"]
    assert "Ada" not in title and "ada@school.example" not in title and "<EMAIL_ADDRESS>" in title
    assert title.startswith("Primes, for") and Conversation.objects.get().title == title

    assert requests.patch(path, json={}, headers=auth).json()["title"] == title  # PATCH: nothing left out changes
    for bad in ({"title": "   "}, {"title": "x" * 201}, {"title": 5}, {"name": "Primes"}):
        refused = requests.patch(path, json=bad, headers=auth)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid", bad
    bob = launch(platform, tool, user=BOB)
    assert requests.patch(path, json={"title": "Mine now"}, headers=bob).status_code == 404
    assert Conversation.objects.get().title == title


def test_a_student_deletes_their_conversation_as_erasure_does_but_not_while_an_urgent_flag_is_open(
    tool, platform, offline_model
):
    auth = launch(platform, tool)
    start(tool, auth, "What is a prime number?")
    plain = Conversation.objects.get()
    bob = launch(platform, tool, user=BOB)
    assert requests.delete(f"{tool}/api/v1/conversations/{plain.id}/", headers=bob).status_code == 404

    deleted = requests.delete(f"{tool}/api/v1/conversations/{plain.id}/", headers=auth)
    assert deleted.status_code == 204
    assert not Conversation.objects.exists() and not Message.objects.exists()
    record = ErasureRecord.objects.get()
    assert record.requested_via == "student_delete" and record.rows_deleted["tutor.Message"] == 2

    flagged = sse_events(start(tool, auth, SELF_HARM))  # screened: the safe reply, an urgent flag
    assert [name for name, _ in flagged] == ["start", "replaced", "done"]
    conversation = Conversation.objects.get()
    flag = Flag.objects.get(conversation=conversation, urgent=True)
    held = requests.delete(f"{tool}/api/v1/conversations/{conversation.id}/", headers=auth)
    assert held.status_code == 409, held.text
    assert held.json()["error"]["code"] == "conversation_held_for_safety"
    assert Message.objects.filter(conversation=conversation).count() == 2 and Flag.objects.filter(pk=flag.pk).exists()

    teacher = launch(platform, tool, user="teacher")
    resolved = requests.post(
        f"{tool}/api/v1/review/flags/{flag.id}/actions/",
        json={"action": "resolve", "note": "Spoke to her."},
        headers=teacher,
    )
    assert resolved.status_code == 201, resolved.text
    assert Flag.objects.get(pk=flag.pk).state == FlagState.RESOLVED
    assert requests.delete(f"{tool}/api/v1/conversations/{conversation.id}/", headers=auth).status_code == 204
    assert not Flag.objects.exists() and not Conversation.objects.exists()
    assert ErasureRecord.objects.filter(requested_via="student_delete").count() == 2


def test_a_reply_cut_short_can_be_asked_for_again(tool, platform, offline_model):
    from tutor.selectors import prompt_messages

    auth = launch(platform, tool)
    start(tool, auth, "What is a prime number?")
    conversation = Conversation.objects.get()
    Message.objects.filter(conversation=conversation, sender="assistant").update(
        status=MessageStatus.INTERRUPTED, content="A prime number is", error_code="client_gone"
    )
    # The retry is taken (the model is down: 503, not 409 `nothing_to_answer`)...
    retried = requests.post(f"{tool}/api/v1/conversations/{conversation.id}/reply/", headers=auth)
    assert retried.status_code == 503, retried.text
    assert retried.json()["error"]["code"] == "model_unavailable"
    # ...and answers the student's question, not the cut reply.
    assert prompt_messages(conversation=conversation)[-1] == {"role": "user", "content": "What is a prime number?"}

"""The app under uvicorn (ASGI): tokens stream as generated, many students at once, nothing lost."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devlms.platform import LIS, DevUser
from tests.support.platform import TestPlatform
from tutor.models import Conversation, Message, MessageStatus, Person
from tutor.services import pseudonym_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]


def launch(platform: TestPlatform, base: str, user) -> dict:
    response = platform.launch(requests.Session(), base, user=user)
    assert response.status_code == 200, response.text[:500]
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)}


def read_events(response: requests.Response):
    buffer = ""
    for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            name = re.search(r"^event: (.*)$", block, re.M).group(1)
            data = re.search(r"^data: (.*)$", block, re.M)
            yield name, json.loads(data.group(1)) if data else {}


def student(i: int) -> DevUser:
    return DevUser(f"s{i}", f"student-sub-{i}", f"Student {i}", (LIS + "membership#Learner",))


def test_tokens_reach_the_browser_while_the_reply_is_being_generated(asgi_url, platform):
    auth = launch(platform, asgi_url, "student")
    conversation_id = requests.post(asgi_url + "/api/v1/conversations/", headers=auth).json()["id"]
    with requests.post(
        f"{asgi_url}/api/v1/conversations/{conversation_id}/messages/stream/",
        json={"content": "Tell me about the water cycle."},
        headers=auth,
        stream=True,
    ) as response:
        events = read_events(response)
        assert next(events)[0] == "start"
        name, _ = next(events)
        assert name == "token"
        # The first token is in our hands and the reply is still being generated.
        assert (
            Message.objects.get(conversation_id=conversation_id, sender="assistant").status == MessageStatus.STREAMING
        )
        rest = [name for name, _ in events]
    assert rest[-1] == "done"
    assert Message.objects.get(conversation_id=conversation_id, sender="assistant").status == MessageStatus.COMPLETE


def test_a_reply_cut_short_by_the_client_is_kept_and_marked(asgi_url, platform):
    auth = launch(platform, asgi_url, "student")
    conversation_id = requests.post(asgi_url + "/api/v1/conversations/", headers=auth).json()["id"]
    response = requests.post(
        f"{asgi_url}/api/v1/conversations/{conversation_id}/messages/stream/",
        json={"content": "Write a long story about a fox."},
        headers=auth,
        stream=True,
    )
    events = read_events(response)
    next(events), next(events)  # start, first token
    response.close()  # the student closes the tab

    reply = None
    for _ in range(60):
        reply = Message.objects.get(conversation_id=conversation_id, sender="assistant")
        if reply.status != MessageStatus.STREAMING:
            break
        time.sleep(0.5)
    assert reply.status == MessageStatus.INTERRUPTED
    assert reply.content  # what was generated before the cut is kept
    assert reply.error_code == "client_gone"
    assert (
        Message.objects.get(conversation_id=conversation_id, sender="user").content == "Write a long story about a fox."
    )


def test_fifty_students_chat_at_once_and_nothing_is_mixed_up(asgi_url, platform):
    students = [student(i) for i in range(50)]
    auths = [launch(platform, asgi_url, s) for s in students]

    def chat(i: int) -> dict:
        auth = auths[i]
        conversation_id = requests.post(asgi_url + "/api/v1/conversations/", headers=auth).json()["id"]
        content = f"Student {i} here. My secret code is ZX{i:03d}. What is {i} plus one?"
        with requests.post(
            f"{asgi_url}/api/v1/conversations/{conversation_id}/messages/stream/",
            json={"content": content},
            headers=auth,
            stream=True,
            timeout=600,
        ) as response:
            assert response.status_code == 200
            events = list(read_events(response))
        tokens = "".join(data["text"] for name, data in events if name == "token")
        return {"i": i, "conversation_id": conversation_id, "content": content, "tokens": tokens, "last": events[-1]}

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(chat, range(50)))

    assert Conversation.objects.count() == 50
    for result in results:
        assert result["last"][0] == "done", result["last"]
        conversation = Conversation.objects.get(pk=result["conversation_id"])
        expected_person = Person.objects.get(
            pseudonym=pseudonym_for(issuer=platform.issuer, subject=f"student-sub-{result['i']}")
        )
        assert conversation.person == expected_person
        rows = list(conversation.messages.order_by("id"))
        assert [(m.sender, m.status) for m in rows] == [("user", "complete"), ("assistant", "complete")]
        assert rows[0].content == result["content"]
        assert rows[1].content == result["tokens"] == result["last"][1]["reply"]["content"]

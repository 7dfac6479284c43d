"""Opening the review pages as the chat page's "Review conversations" button does."""

from __future__ import annotations

import requests


def review_enter(browser: requests.Session, base: str, token: str) -> requests.Response:
    """The launch token POSTed in a form body from the tool's own page (never in a URL)."""
    return browser.post(f"{base}/review/enter/", data={"t": token}, headers={"Origin": base})


def review_client_enter(client, membership) -> None:
    """A Django test client in a teacher's review session, entered as the chat page's button does
    (the launch token POSTed from the tool's origin), for tests that count the pages' queries."""
    import time
    from urllib.parse import urlsplit

    from django.conf import settings
    from django.core import signing

    from tutor.auth import LAUNCH_TOKEN_SALT

    payload = {"m": membership.id, "p": None, "x": int(time.time()) + 600}
    token = signing.dumps(payload, salt=LAUNCH_TOKEN_SALT)
    public = urlsplit(settings.PUBLIC_BASE_URL)
    response = client.post("/review/enter/", {"t": token}, HTTP_ORIGIN=f"{public.scheme}://{public.netloc}")
    assert response.status_code == 302, response.content[:300]


def stored_exchanges(membership, exchanges, *, title: str | None = None):
    """A conversation of `membership` holding (question, reply) pairs, stored with their scrubbed
    copies given as they are (the scrubber's own tests cover scrubbing; hundreds of rows are built
    here in a few queries). An item may be a dict: question, reply, and optionally raw_question
    (what the student typed, before scrubbing) and rating (the student's thumbs)."""
    from tutor.models import Conversation, Message

    items = [item if isinstance(item, dict) else {"question": item[0], "reply": item[1]} for item in exchanges]
    conversation = Conversation.objects.create(
        course_id=membership.course_id, person_id=membership.person_id, title=title or items[0]["question"][:80]
    )
    rows = []
    for item in items:
        rows.append(
            Message(
                conversation=conversation,
                sender=Message.Sender.STUDENT,
                content=item.get("raw_question", item["question"]),
                content_scrubbed=item["question"],
            )
        )
        rows.append(
            Message(
                conversation=conversation,
                sender=Message.Sender.TUTOR,
                content=item["reply"],
                content_scrubbed=item["reply"],
                student_rating=item.get("rating"),
            )
        )
    Message.objects.bulk_create(rows)
    return conversation

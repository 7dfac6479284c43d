"""The emails the tutor sent, read back for the development LMS's outbox page.

Django's file backend (the demo's, EMAIL_FILE_PATH) appends each message to a file, ended by a
line of 79 dashes; the in-memory backend (Django's test runner) keeps them in `mail.outbox`.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core import mail

SEPARATOR = b"\n" + b"-" * 79 + b"\n"
FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
MEMORY_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@dataclass(frozen=True)
class OutboxEmail:
    sender: str
    to: str
    subject: str
    date: str
    body: str


def _parsed(raw: bytes) -> OutboxEmail:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",)) or message
    return OutboxEmail(
        sender=str(message.get("From", "")),
        to=str(message.get("To", "")),
        subject=str(message.get("Subject", "")),
        date=str(message.get("Date", "")),
        body=part.get_content() if not part.is_multipart() else "",
    )


def outbox_emails(*, limit: int = 100) -> list[OutboxEmail]:
    """The newest first."""
    if settings.EMAIL_BACKEND == MEMORY_BACKEND:
        return [_parsed(message.message().as_bytes()) for message in getattr(mail, "outbox", [])][::-1][:limit]
    if settings.EMAIL_BACKEND != FILE_BACKEND:
        return []
    folder = Path(settings.EMAIL_FILE_PATH)
    if not folder.is_dir():
        return []
    emails: list[tuple[float, int, OutboxEmail]] = []
    for path in folder.glob("*.log"):
        modified = path.stat().st_mtime
        for index, raw in enumerate(path.read_bytes().split(SEPARATOR)):
            if raw.strip():
                emails.append((modified, index, _parsed(raw.rstrip(b"\n"))))
    emails.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return [row[2] for row in emails[:limit]]

"""Opening the review pages as the chat page's "Review conversations" button does."""

from __future__ import annotations

import requests


def review_enter(browser: requests.Session, base: str, token: str) -> requests.Response:
    """The launch token POSTed in a form body from the tool's own page (never in a URL)."""
    return browser.post(f"{base}/review/enter/", data={"t": token}, headers={"Origin": base})

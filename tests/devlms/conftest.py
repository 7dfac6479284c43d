"""The development LMS tests use the root conftest's Chromium fixtures; the sizes are
tests.support.screens'."""

from tests.support.screens import DESKTOP, PHONE

__all__ = ["DESKTOP", "PHONE"]

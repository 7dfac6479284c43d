"""Log hygiene: no value from a request's query string reaches a log line.

uvicorn's access log (and runserver's) write each request's path with its query string, and
callers put things there that must not be kept: LTI Dynamic Registration's `registration_token`
(the specification puts it in the URL), an OIDC login's `login_hint` (an LMS user id), the
launch token of an old review link. The path and the parameter names stay; the values go.
"""

from __future__ import annotations

import logging
import re

REQUEST_LOGGERS = ("uvicorn.access", "django.server")
_QUERY_VALUE = re.compile(r"([?&][^=&?\s\"]*=)[^&\s\"]*")


class QueryValuesRedacted(logging.Filter):
    """Replaces every query-string value in a record's arguments by `[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY_VALUE.sub(r"\1[redacted]", arg) if isinstance(arg, str) and "=" in arg else arg
                for arg in record.args
            )
        return True


def request_logs_redact() -> None:
    """Installs the filter on the servers' request loggers (uvicorn configures its own before
    the app is imported, so they are filtered here rather than in LOGGING)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryValuesRedacted) for f in logger.filters):
            logger.addFilter(QueryValuesRedacted())

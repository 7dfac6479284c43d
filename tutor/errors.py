"""The one error contract.

Every refusal the product makes on purpose is a `DomainError` (or a subclass in
another app). It is turned into a response here and only here:

* JSON, for API calls and clients that ask for it::

    {"error": {"code": "launch_expired", "message": "plain words", "detail": {...}}}

  with the error's HTTP status (4xx); documented in docs/errors.md.
* A plain-language HTML page otherwise (templates/errors/domain_error.html),
  frameable by the registered LMSs when the request came through an LMS page.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A refusal with a stable code, a status and a message a person can act on."""

    code: str = "error"
    status: int = 400
    title: str = "Something needs your attention"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **detail: Any):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.detail = detail

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class NotAuthenticated(DomainError):
    code = "not_launched"
    status = 401
    title = "Please open the tutor from your course"


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Not allowed"


# -- the chat's refusals (raised by tutor.chat and tutor.selectors) ------------------------------------


class ChatModelUnavailable(DomainError):
    code = "model_unavailable"
    status = 503
    title = "The tutor is not available right now"


class NothingToAnswer(DomainError):
    code = "nothing_to_answer"
    status = 409


class MessageTooLong(DomainError):
    code = "message_too_long"
    status = 400


class ConversationHeldForSafety(DomainError):
    """A student's delete of a conversation with an unresolved urgent flag (tutor.services)."""

    code = "conversation_held_for_safety"
    status = 409
    title = "This conversation cannot be deleted yet"


class DatabaseBusy(DomainError):
    """The database could not answer in time (SQLite's write lock, a lost connection): nothing of
    the request was written (its transaction rolled back), so the same request can be sent again."""

    code = "database_busy"
    status = 503
    title = "The tutor is busy"
    retry_after_seconds = 2


def domain_error_for(exception: Exception) -> DomainError | None:
    """The refusal an exception is shown as: a DomainError itself, or a database that is busy or
    unreachable (logged with its traceback for the operator, shown to the user as "try again")."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exception, DomainError):
        return exception
    if isinstance(exception, (OperationalError, InterfaceError)):
        logger.error("database error: %s", type(exception).__name__, exc_info=exception)
        return DatabaseBusy(
            "The tutor's database is busy right now. Try again in a moment.",
            retry=True,
            retry_after_seconds=DatabaseBusy.retry_after_seconds,
        )
    return None


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return request.path.startswith("/api/") or ("application/json" in accept and "text/html" not in accept)


def render_domain_error(request: HttpRequest, error: DomainError) -> HttpResponse:
    # Log the code only: messages may quote what the client sent.
    logger.info("refused %s %s: %s", request.method, request.path, error.code)
    if wants_json(request):
        response = JsonResponse(error.as_dict(), status=error.status)
    else:
        html = render_to_string("errors/domain_error.html", {"error": error}, request=request)
        response = HttpResponse(html, status=error.status)
    if "retry_after_seconds" in error.detail:
        response["Retry-After"] = str(error.detail["retry_after_seconds"])
    frame_policy = getattr(request, "frame_policy", None)
    if frame_policy is not None:
        frame_policy(response)
    return response


class DomainErrorMiddleware:
    """Renders any DomainError a view raises, for pages and plain JSON views alike."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        error = domain_error_for(exception)
        return render_domain_error(request, error) if error is not None else None


def api_exception_handler(exc: Exception, context: dict) -> HttpResponse | None:
    """DRF's hook: domain errors and DRF's own errors share the documented JSON shape."""
    from rest_framework import exceptions as drf_exceptions  # DRF's settings import this module
    from rest_framework.views import exception_handler as drf_exception_handler

    if (error := domain_error_for(exc)) is not None:
        return render_domain_error(context["request"]._request, error)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, drf_exceptions.ValidationError):
        message, detail = "Some fields are not valid.", {"fields": response.data}
    else:
        message, detail = str(getattr(exc, "detail", exc)), {}
    if isinstance(exc, drf_exceptions.Throttled):
        code = "rate_limited"
        message = f"You are sending messages too fast. Try again in {int(exc.wait or 1)} seconds."
        detail = {"retry_after_seconds": int(exc.wait or 1)}
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        code, message = NotAuthenticated.code, "Open the tutor from your course to continue."
    response.data = {"error": {"code": code, "message": message, "detail": detail}}
    return response


# Errors Django or a library answers before (or instead of) our views: unknown URLs (non-integer ids
# included), bodies over DATA_UPLOAD_MAX_MEMORY_SIZE, CSRF failures, crashes.
STATUS_CODES = {
    400: ("bad_request", "The request could not be read.", "Something needs your attention"),
    403: ("forbidden", "This request is not allowed.", "Not allowed"),
    404: ("not_found", "There is nothing at this address.", "Not found"),
    405: ("method_not_allowed", "This address does not take that method.", "Not allowed"),
    413: ("request_too_large", "The request body is too large.", "Too large"),
    500: ("server_error", "Something went wrong on our side. It has been logged; try again later.", "Sorry"),
}


def _status_error(status: int) -> DomainError:
    code, message, title = STATUS_CODES.get(status, ("error", "The request failed.", "Something went wrong"))
    error = DomainError(message, code=code, status=status)
    error.title = title
    return error


class ApiErrorShapeMiddleware:
    """Outermost: every `/api/` error response is JSON in the documented shape, whoever made it
    (Django's own 404/400/500 pages, in debug mode too)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            error = _status_error(response.status_code)
            shaped = JsonResponse(error.as_dict(), status=response.status_code)
            for header in ("Retry-After", "Allow", "WWW-Authenticate"):
                if header in response:
                    shaped[header] = response[header]
            return shaped
        return response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: a body over the upload limit is a 413, in the shape the caller reads."""
    from django.core.exceptions import RequestDataTooBig

    status = 413 if isinstance(exception, RequestDataTooBig) else 400
    return render_domain_error(request, _status_error(status))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render_domain_error(request, _status_error(403))


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render_domain_error(request, _status_error(404))


def server_error(request: HttpRequest) -> HttpResponse:
    # No template lookups that could fail again: plain JSON or plain text.
    code, message, _ = STATUS_CODES[500]
    if wants_json(request):
        return JsonResponse({"error": {"code": code, "message": message, "detail": {}}}, status=500)
    return HttpResponse(message, status=500, content_type="text/plain; charset=utf-8")

"""How the API appears in the OpenAPI schema (drf-spectacular): its authentication and its error responses.

The schema is served at /api/schema/; tests/tutor/test_api_contract.py fuzzes the app against it.
"""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from tutor.parsers import StrictInputSerializer


class LaunchTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tutor.auth.LaunchTokenAuthentication"
    name = "launchToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The short-lived launch token the tutor page receives after an LTI launch.",
        }


class LaunchSessionScheme(OpenApiAuthenticationExtension):
    target_class = "tutor.auth.LaunchSessionAuthentication"
    name = "launchSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "The launched browser session."}


class MessageContentScheme(OpenApiSerializerFieldExtension):
    """A student's message as the chat service takes it (read when the schema is generated, so it
    follows CHAT_MAX_MESSAGE_CHARS)."""

    target_class = "tutor.serializers.MessageContentField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": settings.CHAT_MAX_MESSAGE_CHARS,
            # Some text that is not only spaces, and no NUL character (no database can store one).
            "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
            "description": "The student's message, at most CHAT_MAX_MESSAGE_CHARS characters, and within the "
            "model's context counted in its tokens (else 400 `message_too_long`).",
        }


class PatternTextScheme(OpenApiSerializerFieldExtension):
    """A PatternTextField (safety alert addresses, a teacher's note): the very pattern it checks."""

    target_class = "tutor.serializers.PatternTextField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        return {"type": "string", "maxLength": field.max_length, "pattern": f"^(?:{field.pattern})$"}


class ErrorBody(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code (docs/errors.md).")
    message = serializers.CharField(help_text="Plain words a person can act on.")
    detail = serializers.DictField(help_text="Code-specific details, e.g. `retry`, `fields`, `limit`.")


class ErrorResponse(serializers.Serializer):
    error = ErrorBody()


ERROR_DESCRIPTIONS = {
    400: "Invalid input: a malformed or too deeply nested body, an invalid field (`detail.fields`), a message "
    "that is empty or too long.",
    401: "No launch token or launched session, or the token has expired.",
    403: "The launched role may not do this (or a session write without its CSRF token).",
    404: "No such resource in the launched course (unknown or non-integer ids included).",
    409: "Nothing to do: e.g. a retry when the last message already has its reply, or an action on a flag "
    "that someone else changed first.",
    413: "The body is over the upload limit.",
    429: "Too many messages (`detail.retry_after_seconds`).",
    503: "The database is busy (`database_busy`) or, for chat, the model server is unavailable "
    "(`model_unavailable`); `detail.retry: true`.",
}


class TutorAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with the error responses of the one error contract
    (tutor/errors.py) documented on every operation that can answer them."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            if str(status) not in responses:
                response = self._get_response_for_code(ErrorResponse, str(status), direction=direction)
                response["description"] = ERROR_DESCRIPTIONS[status]
                responses[str(status)] = response
        return responses

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictInputSerializer):
            schema["additionalProperties"] = False  # unknown fields are refused (tutor/parsers.py)
        return schema

    def _error_statuses(self) -> list[int]:
        statuses = {401, 403, 404, 503}
        if self.method in {"POST", "PUT", "PATCH"} or self._get_filter_parameters() or self.get_override_parameters():
            statuses.add(400)
        if self.method in {"POST", "PUT", "PATCH"}:
            statuses.add(413)
        if getattr(self.view, "throttle_classes", None):
            statuses.add(429)
        statuses.update(getattr(self.view, "error_statuses", ()))
        return sorted(statuses)

"""How the API reads request bodies: the JSON parser (DRF's `DEFAULT_PARSER_CLASSES`) and the
base of its input serializers.

DRF's JSONParser hands the body to `json.load`, which recurses once per nesting level: 2,000 nested
brackets raise RecursionError (a 500), and it reads a body of any size. This one refuses both as
client errors in the documented shape (docs/errors.md): `parse_error` (400) and
`request_too_large` (413, above Django's DATA_UPLOAD_MAX_MEMORY_SIZE).
"""

from __future__ import annotations

import io

from django.conf import settings
from rest_framework import exceptions, parsers, serializers, status


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


def body_read(stream) -> bytes:
    """The whole body, refused once it passes the upload limit (declared or not: chunked bodies
    have no Content-Length)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return stream.read()
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise RequestTooLarge(f"The request body is over the limit of {limit:,} bytes.")
    return body


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = body_read(stream)
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from exc


class StrictInputSerializer(serializers.Serializer):
    # Takes JSON values of the types its schema names, and no field it does not know: DRF's fields
    # coerce (`0` reads as false, `5` as the text "5", "7" as the number 7) and ignore unknown keys
    # (a misspelt field is silently dropped), so the API would accept what its OpenAPI schema calls
    # invalid. (A comment, not a docstring: drf-spectacular would copy a docstring into every
    # input component's description.) The schema says `additionalProperties: false` (tutor/schema.py).

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {
                name: ["Not a field of this request."]
                for name in data
                if name not in self.fields or self.fields[name].read_only
            }
            for name, field in self.fields.items():
                if field.read_only or name not in data:
                    continue
                value = data[name]
                if value is None or _json_type_matches(field, value):
                    continue
                errors[name] = [f"Must be {_json_type_name(field)}, not {type(value).__name__}."]
            if errors:
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)


def _json_type_matches(field, value) -> bool:
    if isinstance(field, serializers.BooleanField):
        return isinstance(value, bool)
    if isinstance(field, serializers.IntegerField):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(field, serializers.ChoiceField):
        return isinstance(value, str | int) and not isinstance(value, bool)
    if isinstance(field, serializers.CharField):
        return isinstance(value, str)
    return True


def _json_type_name(field) -> str:
    for kind, name in (
        (serializers.BooleanField, "true or false"),
        (serializers.IntegerField, "a whole number"),
        (serializers.FloatField, "a number"),
        (serializers.DecimalField, "a number"),
        (serializers.CharField, "text"),
    ):
        if isinstance(field, kind):
            return name
    return "a valid value"

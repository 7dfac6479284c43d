"""What Moodle 4.5 does with a Deep Linking response, so the development LMS fails where Moodle fails.

Read from Moodle 4.5's source (mod/lti/contentitem_return.php and mod/lti/locallib.php):

1. `lti_convert_from_jwt` decodes the JWT payload with `json_decode($payload, true)`: every JSON
   object becomes a PHP array. The content items are then `json_encode`d back, and a PHP array
   encodes as a JSON list when its keys are 0..n-1, so an empty object (`"custom": {}`) comes
   back as `[]`, and `{"0": "a"}` as `["a"]`. A non-empty object with other keys survives.
   Content items that are not a list of objects are dropped there (nothing is created, no error).
2. `lti_convert_content_items` decodes them again (objects this time), drops items without a
   `type`, takes `html` as the item's text, and rewrites `lineItem.scoreMaximum`.
3. `content_item_to_form` makes one activity per item: `title` is its name (the tool's name when
   empty), `text` its description, `url` its tool URL (the tool's own URL when absent), and
   `custom` (and a line item's `submissionReview.custom`) go through
   `params_to_string(object $params)`. A PHP array there is a TypeError that nothing catches:
   Moodle's fatal error page, HTTP 404, and no activity. Line items count because a manually
   configured tool's default is "Accept grades: delegate to teacher".
4. A response carrying `errormsg` shows it and creates nothing; `msg` is shown on success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"
DEFAULT_SCORE_MAXIMUM = 100


class MoodleFatalError(Exception):
    """An uncaught PHP Error: Moodle answers with its fatal error page (HTTP 404)."""

    status = 404

    def __init__(self, php_message: str):
        # What Moodle's default exception handler shows for a non-Moodle exception.
        super().__init__(f"Exception - {php_message}")


class MoodleRefusal(Exception):
    """A moodle_exception or a tool's errormsg: an error notification on the page, nothing created."""


@dataclass(frozen=True)
class Activity:
    """The external tool activity Moodle would add to the course for one content item."""

    name: str
    intro: str = ""
    tool_url: str | None = None  # None: launches go to the tool's own URL
    custom_parameters: str = ""  # Moodle's instructorcustomparameters: "key=value" lines
    grade_max: float | None = None


def _php_array_keys_are_a_list(mapping: dict) -> bool:
    # json_decode(..., true) turns decimal-integer keys into int keys; json_encode writes a list
    # when the keys are exactly 0..n-1 in order (an empty array included).
    return all(key == str(index) for index, key in enumerate(mapping))


def php_json_roundtrip(value: object) -> object:
    """json_encode(json_decode($json, true)): objects pass through PHP arrays."""
    if isinstance(value, dict):
        if _php_array_keys_are_a_list(value):
            return [php_json_roundtrip(item) for item in value.values()]
        return {key: php_json_roundtrip(item) for key, item in value.items()}
    if isinstance(value, list):
        return [php_json_roundtrip(item) for item in value]
    return value


def _php_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "stdClass"


def _php_string(value: object) -> str:
    """PHP's string interpolation of a decoded JSON scalar."""
    if isinstance(value, dict):
        raise MoodleFatalError("Object of class stdClass could not be converted to string")
    if isinstance(value, list):
        return "Array"  # only a warning in PHP 8
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def params_to_string(params: object) -> str:
    """locallib.php's params_to_string(object $params)."""
    if not isinstance(params, dict):
        raise MoodleFatalError(
            f"params_to_string(): Argument #1 ($params) must be of type object, {_php_type(params)} given"
        )
    return "\n".join(f"{key}={_php_string(value)}" for key, value in params.items())


def _isset(item: dict, key: str) -> bool:
    return item.get(key) is not None


def _php_empty(value: object) -> bool:
    return value in (None, "", "0", 0, False, [], {})


def _content_items_json(claims: dict) -> list:
    """lti_convert_from_jwt: the content items claim as Moodle re-encodes it."""
    value = claims.get(DL + "content_items")
    if not value or not isinstance(value, list) or not isinstance(value[0], dict | list):
        return []  # Moodle implodes it into a string that does not decode: no items
    return php_json_roundtrip(value)


def _activity_from_item(item: dict, *, tool_name: str) -> Activity:
    """content_item_to_form, on an item as lti_convert_content_items left it."""
    name = item.get("title") if _isset(item, "title") else ""
    text = item.get("html") if _isset(item, "html") else item.get("text")
    grade_max = None
    if _isset(item, "lineItem"):
        # Rebuilt as an object from the fields it has (reading one off an array is only a warning).
        line_item = item["lineItem"] if isinstance(item["lineItem"], dict) else {}
        score = line_item.get("scoreMaximum")
        grade_max = score if score is not None else DEFAULT_SCORE_MAXIMUM
        review = line_item.get("submissionReview")
        if isinstance(review, dict) and _isset(review, "custom"):
            params_to_string(review["custom"])
    custom = params_to_string(item["custom"]) if _isset(item, "custom") else ""
    url = item.get("url") if _isset(item, "url") else None
    if url is not None and not isinstance(url, str):
        # moodle_url's constructor starts with strpos($url, '#').
        raise MoodleFatalError(f"strpos(): Argument #1 ($haystack) must be of type string, {_php_type(url)} given")
    return Activity(
        name=str(name) if not _php_empty(name) else tool_name,
        intro=_php_string(text) if text is not None else "",
        tool_url=url,
        custom_parameters=custom,
        grade_max=grade_max,
    )


def deep_linking_response_activities(claims: dict, *, tool_name: str) -> tuple[list[Activity], str]:
    """The activities Moodle creates from a verified LtiDeepLinkingResponse, and its message.

    Raises MoodleFatalError where Moodle stops with its fatal error page, MoodleRefusal where it
    shows an error notification; in both cases nothing is created.
    """
    errormsg = claims.get(DL + "errormsg")
    if isinstance(errormsg, str) and errormsg:
        raise MoodleRefusal(errormsg)
    # Items go through JSON twice more (lti_convert_content_items, then contentitem_return.php
    # decodes its output); with objects now, so shapes survive.
    items = json.loads(json.dumps(_content_items_json(claims)))
    activities = [
        _activity_from_item(item, tool_name=tool_name)
        for item in items
        if isinstance(item, dict) and _isset(item, "type")
    ]
    msg = claims.get(DL + "msg")
    return activities, msg if isinstance(msg, str) else ""


def custom_claim(custom_parameters: str) -> dict[str, str]:
    """The custom claim Moodle launches an activity with (lti_split_custom_parameters, LTI 1.3)."""
    claim: dict[str, str] = {}
    for line in custom_parameters.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        key, sep, value = line.partition("=")
        if not sep or not key:
            continue
        key, value = key.strip(), value.strip()
        mapped = "".join(ch if ch.isascii() and (ch.isdigit() or "a" <= ch <= "z") else "_" for ch in key.lower())
        claim[mapped] = value
        claim[key] = value  # LTI 1.3 launches carry the original name too when it differs
    return claim

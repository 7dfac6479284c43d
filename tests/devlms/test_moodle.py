"""The development LMS reads a Deep Linking response the way Moodle 4.5's mod/lti does."""

from __future__ import annotations

import pytest

from devlms import moodle

pytestmark = [pytest.mark.fast]

DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"


def response(*items: dict, **claims) -> dict:
    return {DL + "content_items": list(items), **{DL + name: value for name, value in claims.items()}}


def test_json_objects_come_back_as_php_would_encode_them():
    # json_encode(json_decode($x, true)): the array lost whether it was an object.
    assert moodle.php_json_roundtrip({}) == []
    assert moodle.php_json_roundtrip({"custom": {}, "title": "x"}) == {"custom": [], "title": "x"}
    assert moodle.php_json_roundtrip({"0": "a", "1": "b"}) == ["a", "b"]
    assert moodle.php_json_roundtrip({"1": "a"}) == {"1": "a"}  # keys not 0..n-1: still an object
    assert moodle.php_json_roundtrip({"topic": "fractions"}) == {"topic": "fractions"}
    assert moodle.php_json_roundtrip([{"icon": {}}]) == [{"icon": []}]


def test_an_empty_custom_object_is_moodles_fatal_error():
    item = {"type": "ltiResourceLink", "title": "Tutor", "url": "https://tutor.example/lti/launch/", "custom": {}}
    with pytest.raises(moodle.MoodleFatalError) as raised:
        moodle.deep_linking_response_activities(response(item), tool_name="AI Tutor")
    assert str(raised.value) == (
        "Exception - params_to_string(): Argument #1 ($params) must be of type object, array given"
    )
    assert raised.value.status == 404


def test_an_empty_custom_in_a_line_items_submission_review_fails_the_same_way():
    item = {"type": "ltiResourceLink", "lineItem": {"scoreMaximum": 10, "submissionReview": {"custom": {}}}}
    with pytest.raises(moodle.MoodleFatalError, match="params_to_string"):
        moodle.deep_linking_response_activities(response(item), tool_name="AI Tutor")


def test_custom_values_that_are_objects_cannot_become_a_string():
    item = {"type": "ltiResourceLink", "custom": {"nested": {"a": "b"}}}
    with pytest.raises(moodle.MoodleFatalError, match="could not be converted to string"):
        moodle.deep_linking_response_activities(response(item), tool_name="AI Tutor")


def test_a_well_formed_item_becomes_an_activity_as_moodle_fills_its_form():
    item = {
        "type": "ltiResourceLink",
        "title": "Ratios helper",
        "text": "Ask about ratios",
        "url": "https://tutor.example/lti/launch/",
        "custom": {"Topic-Name": "ratios", "level": 2, "strict": True},
        "lineItem": {"scoreMaximum": 20, "label": "Ratios"},
    }
    untyped = {"title": "dropped: no type"}
    activities, message = moodle.deep_linking_response_activities(
        response(item, untyped, msg="Placed"), tool_name="AI Tutor"
    )
    assert message == "Placed"
    (activity,) = activities
    assert activity.name == "Ratios helper"
    assert activity.intro == "Ask about ratios"
    assert activity.tool_url == "https://tutor.example/lti/launch/"
    assert activity.custom_parameters == "Topic-Name=ratios\nlevel=2\nstrict=1"
    assert activity.grade_max == 20
    # ...and a launch of it carries the custom claim under Moodle's mapped names and the original.
    assert moodle.custom_claim(activity.custom_parameters) == {
        "topic_name": "ratios",
        "Topic-Name": "ratios",
        "level": "2",
        "strict": "1",
    }


def test_an_untitled_item_takes_the_tools_name_and_a_missing_url_the_tools_url():
    activities, _ = moodle.deep_linking_response_activities(
        response({"type": "ltiResourceLink", "title": ""}), tool_name="AI Tutor"
    )
    assert activities == [moodle.Activity(name="AI Tutor")]


def test_no_items_or_items_that_are_not_objects_create_nothing_and_fail_nothing():
    assert moodle.deep_linking_response_activities(response(), tool_name="AI Tutor") == ([], "")
    assert moodle.deep_linking_response_activities({DL + "content_items": ["x"]}, tool_name="AI Tutor") == ([], "")
    assert moodle.deep_linking_response_activities({DL + "content_items": {}}, tool_name="AI Tutor") == ([], "")


def test_a_tools_errormsg_is_shown_and_nothing_is_created():
    with pytest.raises(moodle.MoodleRefusal, match="no course selected"):
        moodle.deep_linking_response_activities(
            response({"type": "ltiResourceLink"}, errormsg="no course selected"), tool_name="AI Tutor"
        )

"""Valid LTI 1.3 launches over HTTP, for each role, and the launch token that follows."""

from __future__ import annotations

import re

import pytest
import requests
from django.core import signing

from devlms.platform import LIS, DevUser
from tests.support.chat import conversation_for
from tests.support.platform import TestPlatform
from tutor.auth import LAUNCH_TOKEN_SALT
from tutor.models import Course, Membership, Person, Placement
from tutor.services import pseudonym_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def launch_token(response: requests.Response) -> str:
    match = re.search(r'name="launch-token" content="([^"]+)"', response.text)
    assert match, response.text[:1000]
    return match.group(1)


ROLE_CASES = [
    ("learner", (LIS + "membership#Learner",), "student"),
    ("bare Learner", ("Learner",), "student"),
    ("instructor", (LIS + "membership#Instructor",), "teacher"),
    ("teaching assistant", (LIS + "membership/Instructor#TeachingAssistant",), "teacher"),
    ("content developer", (LIS + "membership#ContentDeveloper",), "teacher"),
    ("institution admin", (LIS + "institution/person#Administrator", LIS + "membership#Learner"), "admin"),
    ("system admin", (LIS + "system/person#SysAdmin",), "admin"),
]


@pytest.mark.parametrize(("case", "roles", "expected"), ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_launch_maps_lti_roles_to_our_three_kinds(tool, platform: TestPlatform, browser, case, roles, expected):
    user = DevUser("u", f"sub-{expected}-{case}", "Someone", roles)
    response = platform.launch(browser, tool, user=user)

    assert response.status_code == 200, response.text[:1000]
    assert f'data-testid="role">{expected}<' in response.text
    membership = Membership.objects.get()
    assert membership.role == expected
    assert membership.course.lms_context_id == "course-42"
    assert membership.course.title == "Biology 1"


def test_launch_records_course_placement_and_a_pseudonym_only(tool, platform: TestPlatform, browser):
    response = platform.launch(browser, tool, user="student")
    assert response.status_code == 200

    course = Course.objects.get()
    assert (course.lms_issuer, course.lms_context_id, course.lms_deployment_id) == (
        platform.issuer,
        "course-42",
        "deployment-1",
    )
    placement = Placement.objects.get()
    assert (placement.course, placement.lms_resource_link_id, placement.title) == (course, "link-7", "Biology tutor")
    person = Person.objects.get()
    assert person.pseudonym == pseudonym_for(issuer=platform.issuer, subject="devlms-student-1")
    assert "devlms-student-1" not in person.pseudonym
    # django-lti's user/context tables (which hold names and emails) are not used.
    from lti_tool.models import LtiUser

    assert LtiUser.objects.count() == 0


def test_second_launch_updates_rows_instead_of_duplicating(tool, platform: TestPlatform, browser):
    assert platform.launch(browser, tool, user="student").status_code == 200
    response = platform.launch(
        requests.Session(), tool, user="student", lti_context={"id": "course-42", "title": "Biology 1 (renamed)"}
    )
    assert response.status_code == 200
    assert Course.objects.get().title == "Biology 1 (renamed)"
    assert Membership.objects.count() == 1 and Person.objects.count() == 1


def test_launch_token_authenticates_api_without_any_cookie(tool, platform: TestPlatform, browser):
    token = launch_token(platform.launch(browser, tool, user="teacher"))

    cookieless = requests.get(tool + "/api/v1/me/", headers={"Authorization": f"Bearer {token}"})

    assert cookieless.status_code == 200
    body = cookieless.json()
    assert body["role"] == "teacher"
    assert body["course"]["title"] == "Biology 1"
    assert body["placement_id"] == Placement.objects.get().id


def test_launched_session_cookie_also_authenticates(tool, platform: TestPlatform, browser):
    platform.launch(browser, tool, user="student")
    assert browser.get(tool + "/api/v1/me/").json()["role"] == "student"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "not_launched"),
        ({"Authorization": "Bearer not-a-token"}, "launch_token_invalid"),
    ],
)
def test_api_without_valid_launch_is_refused_with_the_error_contract(tool, headers, code):
    response = requests.get(tool + "/api/v1/me/", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_expired_launch_token_is_refused(tool, platform: TestPlatform, browser, settings):
    token = launch_token(platform.launch(browser, tool, user="student"))
    settings.LAUNCH_TOKEN_MAX_AGE = -1
    response = requests.get(tool + "/api/v1/me/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "launch_token_expired"


def test_launch_token_for_another_membership_cannot_be_forged(tool, platform: TestPlatform, browser):
    token = launch_token(platform.launch(browser, tool, user="student"))
    second = DevUser("student2", "devlms-student-2", "Bea Second", (LIS + "membership#Learner",))
    assert platform.launch(requests.Session(), tool, user=second).status_code == 200
    theirs = Membership.objects.get(person__pseudonym=pseudonym_for(issuer=platform.issuer, subject=second.sub))
    their_conversation = conversation_for(theirs)
    payload = signing.loads(token, salt=LAUNCH_TOKEN_SALT)
    assert payload["m"] != theirs.pk
    claims = {**payload, "m": theirs.pk}  # another student's real membership

    def their_conversation_with(token: str) -> requests.Response:
        url = f"{tool}/api/v1/conversations/{their_conversation.pk}/"
        return requests.get(url, headers={"Authorization": f"Bearer {token}"})

    # Signed with the tool's key, these claims open the other student's conversation: only the
    # signature stands between the forgery below and their data.
    assert their_conversation_with(signing.dumps(claims, salt=LAUNCH_TOKEN_SALT)).status_code == 200
    forged = their_conversation_with(signing.dumps(claims, salt="another-salt"))
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "launch_token_invalid"
    assert forged.json()["error"]["message"].startswith("The launch token is not valid.")

"""What a launch leaves behind: no launch message in the cache (pylti1p3 would keep all of it for
24 hours), no LMS user id or email in any table, names only where docs/privacy.md says, and
nothing of a person once they are erased."""

from __future__ import annotations

import html
import re
from io import StringIO

import pytest
import redis
import requests
from django.conf import settings
from django.core import signing
from django.core.management import call_command
from django.db import connection

from devlms.platform import LIS, DevUser
from lti.platform_storage import TICKET_SALT
from tests.lti.test_iframe import storage_login
from tests.support.db import row_counts
from tests.support.platform import TestPlatform

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

EMAIL = "zebedee.quintrell@school.example"
STUDENT = DevUser("zq", "moodle-user-73519", "Zebedee Quintrell", (LIS + "membership#Learner",))
TEACHER = DevUser("wh", "moodle-user-80264", "Winifred Hollowmere", (LIS + "membership#Instructor",))
DJANGO_LTI_TABLES = ["lti_tool.LtiUser", "lti_tool.LtiContext", "lti_tool.LtiMembership", "lti_tool.LtiResourceLink"]


def person_claims(user: DevUser, email: str = EMAIL) -> dict:
    given, family = user.name.split()
    return {"email": email, "given_name": given, "family_name": family, "picture": "https://lms.example/u/9.png"}


def cache_contents() -> bytes:
    """Every key and value in the cache the tool and the tests share (Redis, values pickled)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    return b"\n".join(
        key + b"=" + (client.get(key) or b"") for key in client.scan_iter() if client.type(key) == b"string"
    )


def tables_holding(value: str) -> list[str]:
    """The tables with a row whose text (every column) contains `value`."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT 1 FROM "{table}" AS row WHERE row::text ILIKE %s LIMIT 1', [f"%{value}%"])
            if cursor.fetchone():
                found.append(table)
    return found


def assert_cache_holds_nothing_of(user: DevUser) -> None:
    contents = cache_contents()
    for value in (user.sub, user.name, *user.name.split(), EMAIL):
        assert value.encode() not in contents, value


def test_a_launch_leaves_no_launch_message_behind_and_erasure_leaves_nothing(tool, platform: TestPlatform):
    response = platform.launch(requests.Session(), tool, user=STUDENT, **person_claims(STUDENT))
    assert response.status_code == 200, response.text[:500]

    assert b"lti1p3-launch-" not in cache_contents()
    assert_cache_holds_nothing_of(STUDENT)
    assert tables_holding(STUDENT.sub) == [] and tables_holding(EMAIL) == []
    assert tables_holding("Quintrell") == ["tutor_membername"]  # the one names table
    assert {label: row_counts()[label] for label in DJANGO_LTI_TABLES} == dict.fromkeys(DJANGO_LTI_TABLES, 0)

    call_command("erase_student", "--issuer", platform.issuer, "--sub", STUDENT.sub, stdout=StringIO())

    assert tables_holding("Quintrell") == [] and tables_holding("Zebedee") == []
    assert_cache_holds_nothing_of(STUDENT)


def deep_link_answer(tool: str, page: str) -> requests.Response:
    token = html.unescape(re.search(r'name="token" value="([^"]+)"', page).group(1))
    return requests.post(tool + "/lti/deep-link/", data={"token": token, "title": "Algebra helper"})


def test_a_deep_linking_request_keeps_only_what_its_response_needs(tool, platform: TestPlatform):
    page = platform.launch(
        requests.Session(), tool, user=TEACHER, message_type="LtiDeepLinkingRequest", **person_claims(TEACHER)
    )
    assert page.status_code == 200, page.text[:500]

    assert cache_contents().count(b"lti1p3-launch-") == 1  # read back to sign the response
    assert_cache_holds_nothing_of(TEACHER)
    answer = deep_link_answer(tool, page.text)
    assert answer.status_code == 200 and 'name="JWT"' in answer.text


def test_a_platform_storage_launch_keeps_nothing_between_its_two_steps(tool, platform: TestPlatform):
    config = storage_login(platform, tool, requests.Session())
    claims = platform.claims(nonce=config["nonce"], user=TEACHER, message_type="LtiDeepLinkingRequest")
    claims.update(person_claims(TEACHER))
    check_page = requests.post(
        tool + "/lti/launch/",
        data={"id_token": platform.sign(claims), "state": config["state"], "lti_storage_target": config["target"]},
    )
    assert check_page.status_code == 200 and "lti.get_data" in check_page.text
    assert b"lti1p3-launch-" not in cache_contents()
    assert_cache_holds_nothing_of(TEACHER)
    ticket = html.unescape(re.search(r'name="ticket" value="([^"]+)"', check_page.text).group(1))
    carried = signing.loads(ticket, salt=TICKET_SALT)["c"]  # the claims the product uses, no more
    assert carried["sub"] == TEACHER.sub and not {"email", "picture"} & set(carried)
    confirmed = requests.post(
        tool + "/lti/launch/confirm/",
        data={"ticket": ticket, "state": config["state"], "nonce": config["nonce"]},
        headers={"Origin": tool},
    )
    assert confirmed.status_code == 200, confirmed.text[:500]
    assert_cache_holds_nothing_of(TEACHER)
    answer = deep_link_answer(tool, confirmed.text)
    assert answer.status_code == 200 and 'name="JWT"' in answer.text

"""The review filters are read once (tutor.serializers.ConversationFiltersIn), by the API and the
review page alike: a bad date is refused by both, in plain words, and a good one filters both."""

from __future__ import annotations

import re
from html import escape

import pytest
import requests

from tests.support.review import review_enter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def test_a_bad_date_is_refused_by_the_api_and_shown_on_the_page(tool, platform):
    browser = requests.Session()
    page = platform.launch(browser, tool, user="teacher")
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="launch-token" content="([^"]+)"', page.text).group(1)
    auth = {"Authorization": f"Bearer {token}"}
    api = f"{tool}/api/v1/review/conversations/"
    entered = review_enter(browser, tool, token)
    assert entered.status_code == 200, entered.text[:300]
    course_page = entered.url

    bad = requests.get(api, params={"since": "2024-13-01"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_date"
    assert bad.json()["error"]["message"] == "since must be a date (YYYY-MM-DD)."
    shown = browser.get(course_page, params={"since": "2024-13-01"})
    assert shown.status_code == 400 and "text/html" in shown.headers["Content-Type"]
    assert escape("since must be a date (YYYY-MM-DD).") in shown.text

    # Empty fields (the page's form sends them all) are no filter, for both.
    assert requests.get(api, params={"since": "", "flagged": ""}, headers=auth).status_code == 200
    assert browser.get(course_page, params={"since": "", "until": "", "flagged": ""}).status_code == 200
    future = {"since": "2999-01-01"}
    assert requests.get(api, params=future, headers=auth).json() == []
    assert browser.get(course_page, params=future).status_code == 200

"""The test database: row counts of every table a launch could write to (to prove a refusal stored
nothing), and its URL for server processes."""

from __future__ import annotations

from django.apps import apps

LAUNCH_TABLES = [
    "tutor.Course",
    "tutor.Placement",
    "tutor.Person",
    "tutor.Membership",
    "lti_tool.LtiRegistration",
    "lti_tool.LtiDeployment",
    "lti_tool.LtiUser",
    "lti_tool.LtiContext",
    "lti_tool.LtiMembership",
    "lti_tool.LtiResourceLink",
    "sessions.Session",
]


def row_counts() -> dict[str, int]:
    return {label: apps.get_model(label).objects.count() for label in LAUNCH_TABLES}


def database_url_for_tests() -> str:
    """The test database (pytest-django's) as a URL, for the server processes the tests start."""
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"

"""LTI role URIs → our three kinds of user."""

from __future__ import annotations

from collections.abc import Iterable

from tutor.models import Role

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
_TEACHER_CONTEXT_ROLES = {"Instructor", "TeachingAssistant", "ContentDeveloper", "Administrator"}
_ADMIN_PERSON_ROLES = {"Administrator", "SysAdmin", "AccountAdmin"}


def _parse(role: str) -> tuple[str, str]:
    """('membership'|'institution'|'system', name) for a role URI or a bare context role name.

    A sub-role such as `membership/Instructor#TeachingAssistant` gives its own
    name (`TeachingAssistant`), which we map like its parent.
    """
    if role.startswith(LIS):
        path, _, name = role[len(LIS) :].partition("#")
        return path.split("/")[0], name
    if "#" not in role and "/" not in role:
        return "membership", role  # LTI 1.3 allows bare context role names
    return "unknown", role


def role_from_lti(roles: Iterable[str]) -> Role | None:
    """Administrator (institution/system) → admin; Instructor, TA, ContentDeveloper,
    course Administrator → teacher; Learner → student; anything else → None (no access)."""
    parsed = [_parse(role) for role in roles]
    if any(kind in {"institution", "system"} and name in _ADMIN_PERSON_ROLES for kind, name in parsed):
        return Role.ADMIN
    if any(kind == "membership" and name in _TEACHER_CONTEXT_ROLES for kind, name in parsed):
        return Role.TEACHER
    if any(kind == "membership" and name == "Learner" for kind, name in parsed):
        return Role.STUDENT
    return None

import pytest

from lti.roles import role_from_lti
from tutor.models import Role

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"

pytestmark = [pytest.mark.fast]


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([LIS + "membership#Learner"], Role.STUDENT),
        (["Learner"], Role.STUDENT),
        ([LIS + "membership#Instructor"], Role.TEACHER),
        ([LIS + "membership/Instructor#TeachingAssistant"], Role.TEACHER),
        ([LIS + "membership#ContentDeveloper"], Role.TEACHER),
        ([LIS + "membership#Administrator"], Role.TEACHER),  # a course's own administrator
        ([LIS + "institution/person#Administrator"], Role.ADMIN),
        ([LIS + "system/person#Administrator"], Role.ADMIN),
        ([LIS + "system/person#SysAdmin", LIS + "membership#Learner"], Role.ADMIN),
        ([LIS + "membership#Learner", LIS + "membership#Instructor"], Role.TEACHER),
        ([LIS + "institution/person#Student", LIS + "membership#Learner"], Role.STUDENT),
        ([LIS + "institution/person#Learner"], None),  # an institution role alone gives no course role
        ([LIS + "membership#Mentor"], None),
        ([], None),
        (["http://example.com/custom#Instructor"], None),
    ],
)
def test_role_mapping(roles, expected):
    assert role_from_lti(roles) == expected

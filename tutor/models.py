"""Courses, tutor placements and who belongs to them.

No table here holds an LMS user id, a name or an email: a person is a keyed
hash of (issuer, subject) made by `tutor.services.pseudonym_for`.
"""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    STUDENT = "student", "Student"
    TEACHER = "teacher", "Teacher"
    ADMIN = "admin", "Administrator"


class Course(models.Model):
    """An LMS context (course) that launched the tutor."""

    lms_issuer = models.CharField(max_length=255)
    lms_deployment_id = models.CharField(max_length=255)
    lms_context_id = models.CharField(max_length=255)
    title = models.CharField(max_length=500, blank=True)
    label = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["lms_issuer", "lms_context_id"], name="course_unique_per_lms_context")
        ]

    def __str__(self) -> str:
        return self.title or self.label or self.lms_context_id


class Placement(models.Model):
    """A tutor placed in a course: one LTI resource link."""

    course = models.ForeignKey(Course, related_name="placements", on_delete=models.CASCADE)
    lms_resource_link_id = models.CharField(max_length=255)
    title = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["course", "lms_resource_link_id"], name="placement_unique_per_course")
        ]

    def __str__(self) -> str:
        return self.title or self.lms_resource_link_id


class Person(models.Model):
    """A pseudonymous person: HMAC-SHA256(PSEUDONYM_SECRET, issuer + subject)."""

    pseudonym = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.pseudonym[:12]


class Membership(models.Model):
    """A person's role in a course, as the LMS last stated it."""

    person = models.ForeignKey(Person, related_name="memberships", on_delete=models.CASCADE)
    course = models.ForeignKey(Course, related_name="memberships", on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    last_launch_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["person", "course"], name="membership_unique_per_course")]

    def __str__(self) -> str:
        return f"{self.person} ({self.role}) in {self.course}"

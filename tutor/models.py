"""Courses, tutor placements and who belongs to them.

No table here holds an LMS user id or an email: a person is a keyed hash of
(issuer, subject) made by `tutor.services.pseudonym_for`. The names the LMS sends
live in one separate, minimal table (`MemberName`): teachers' screens and the PII
scrubber's deny-list read it; exports never do, and erasure clears it.
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
    instructions = models.TextField(
        blank=True,
        help_text="Extra instructions for the tutor in this placement only (an assignment's own context), "
        "added to the course's.",
    )
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
    training_opt_out = models.BooleanField(
        default=False, help_text="The student asked that their conversations in this course never train the tutor."
    )
    training_opt_out_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["person", "course"], name="membership_unique_per_course")]

    def __str__(self) -> str:
        return f"{self.person} ({self.role}) in {self.course}"


class MemberName(models.Model):
    """The name the LMS gave for a course member: shown to the course's teachers and used to
    scrub that name from everyone's messages. Never exported; deleted with the person."""

    membership = models.OneToOneField(Membership, related_name="name", on_delete=models.CASCADE)
    full_name = models.CharField(max_length=300, blank=True)
    given_name = models.CharField(max_length=150, blank=True)
    family_name = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.full_name or " ".join(filter(None, [self.given_name, self.family_name]))

    @property
    def names(self) -> list[str]:
        return [n for n in (self.full_name, self.given_name, self.family_name) if n]


class LearnerLevel(models.TextChoices):
    PRIMARY = "primary", "Primary school"
    SECONDARY = "secondary", "Secondary school"
    UNDERGRADUATE = "undergraduate", "University (undergraduate)"
    GRADUATE = "graduate", "University (graduate)"
    ADULT = "adult", "Adult learners"


class TutorSettings(models.Model):
    """A course's tutor, as its teachers set it. Defaults make a new course work at once."""

    course = models.OneToOneField(Course, related_name="tutor_settings", on_delete=models.CASCADE)
    persona = models.TextField(
        blank=True,
        default="You are a patient, encouraging tutor. Explain step by step and check understanding.",
    )
    instructions = models.TextField(blank=True, help_text="Extra instructions from the course's teachers.")
    subject = models.CharField(max_length=200, blank=True)
    level = models.CharField(max_length=20, choices=LearnerLevel.choices, default=LearnerLevel.SECONDARY)
    reply_language = models.CharField(max_length=60, default="the student's language")
    socratic = models.BooleanField(default=False, help_text="Guide the student toward the answer instead of giving it.")
    avoid = models.TextField(
        blank=True,
        help_text="Topics or answers the tutor must not give, one per line (for example: the answers to "
        "this week's graded exercises).",
    )
    greeting = models.TextField(blank=True, help_text="What a student sees before their first question.")
    example_questions = models.JSONField(
        default=list, blank=True, help_text="A few questions a student can start from (a list of strings)."
    )
    training_consent = models.BooleanField(
        default=False,
        help_text="Whether this course's conversations may be used to train its tutor (off until a teacher "
        "or administrator turns it on; students can still opt out).",
    )
    training_consent_changed_by = models.ForeignKey(
        Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    training_consent_changed_at = models.DateTimeField(null=True, blank=True)
    # Staff addresses the course's own people typed in (the LMS shares no email with the tutor):
    # never a student's, shown to the course's teachers and administrators only.
    safety_alert_emails = models.TextField(
        blank=True,
        help_text="Comma-separated addresses emailed when a student's message raises an urgent flag "
        "(set by the course's teachers).",
    )
    safety_escalation_emails = models.TextField(
        blank=True,
        help_text="Comma-separated addresses emailed when nobody acknowledges an urgent flag in time "
        "(set by the course's administrators).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Tutor settings of {self.course}"


class Conversation(models.Model):
    """One student's chat with a course's tutor."""

    course = models.ForeignKey(Course, related_name="conversations", on_delete=models.CASCADE)
    placement = models.ForeignKey(Placement, related_name="conversations", null=True, on_delete=models.SET_NULL)
    person = models.ForeignKey(Person, related_name="conversations", on_delete=models.CASCADE)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["person", "course", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class SystemPrompt(models.Model):
    """A system prompt the tutor replied under, stored once however many replies used it (keyed
    by the text's sha256): the export trains each conversation under the tutor settings it had,
    not today's. Built from course settings only; it holds nothing about a student."""

    sha256 = models.CharField(max_length=64, unique=True)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"System prompt {self.sha256[:12]}"


class MessageStatus(models.TextChoices):
    COMPLETE = "complete", "Complete"
    STREAMING = "streaming", "Being generated"
    INTERRUPTED = "interrupted", "Cut short"
    FAILED = "failed", "Failed"


class Message(models.Model):
    """A student message or a tutor reply. A student message is committed before the model is called."""

    class Sender(models.TextChoices):
        STUDENT = "user", "Student"
        TUTOR = "assistant", "Tutor"

    conversation = models.ForeignKey(Conversation, related_name="messages", on_delete=models.CASCADE)
    sender = models.CharField(max_length=16, choices=Sender.choices)
    content = models.TextField(help_text="As written (student) or generated (tutor); shown only to the student.")
    # NULL (not "") marks a row written before scrubbing existed: never exported.
    content_scrubbed = models.TextField(  # noqa: DJ001
        null=True, blank=True, help_text="PII replaced by <TYPE> tags: the only text teachers and exports see."
    )
    pii_found = models.JSONField(default=dict, blank=True, help_text="Counts per PII type; never the values.")
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.COMPLETE)
    error_code = models.CharField(max_length=64, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    system_prompt = models.ForeignKey(
        SystemPrompt,
        null=True,
        blank=True,
        related_name="+",
        on_delete=models.PROTECT,
        help_text="The system prompt this tutor reply was generated under (NULL: a student message, or a "
        "reply stored before prompts were recorded).",
    )
    guardrail = models.CharField(max_length=64, blank=True, help_text="The rule that screened this message, if any.")
    student_rating = models.SmallIntegerField(null=True, blank=True, help_text="+1 or -1, from the student")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.sender} message {self.pk}"


class FlagState(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


# "Unresolved" is what the review overview's "open flags" counter, the review list's `flagged`
# filter and the safety queue's default view all count.
UNRESOLVED_FLAG_STATES = (FlagState.OPEN, FlagState.ACKNOWLEDGED)


class Flag(models.Model):
    """Something a course's teachers should look at (raised by guardrails or people), triaged
    open → acknowledged → resolved (tutor.flags)."""

    course = models.ForeignKey(Course, related_name="flags", on_delete=models.CASCADE)
    conversation = models.ForeignKey(Conversation, related_name="flags", on_delete=models.CASCADE)
    message = models.ForeignKey(Message, related_name="flags", on_delete=models.CASCADE)
    category = models.CharField(max_length=64)
    reason = models.CharField(max_length=300)
    urgent = models.BooleanField(
        default=False, help_text="Self-harm or abuse: the teachers are alerted, the administrators if nobody acts."
    )
    state = models.CharField(max_length=16, choices=FlagState.choices, default=FlagState.OPEN)
    raised_by = models.ForeignKey(Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    escalate_at = models.DateTimeField(
        null=True, blank=True, help_text="When this urgent flag, still open, goes to the administrators (NULL: never)."
    )
    escalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["course", "state"], name="flag_course_state"),
            models.Index(fields=["state", "escalate_at"], name="flag_escalation_due"),
        ]

    def __str__(self) -> str:
        return f"{self.category} flag on message {self.message_id}"


class FlagAction(models.Model):
    """A teacher's action on a flag, with its note: the triage history (who, when, what)."""

    class Action(models.TextChoices):
        ACKNOWLEDGE = "acknowledge", "Acknowledged"
        RESOLVE = "resolve", "Resolved"
        REOPEN = "reopen", "Reopened"
        NOTE = "note", "Note"

    flag = models.ForeignKey(Flag, related_name="actions", on_delete=models.CASCADE)
    action = models.CharField(max_length=16, choices=Action.choices)
    state = models.CharField(max_length=16, choices=FlagState.choices, help_text="The flag's state after the action.")
    actor = models.ForeignKey(Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    note = models.TextField(blank=True, help_text="Scrubbed before it is stored: every teacher of the course reads it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} on flag {self.flag_id}"


class FlagAlert(models.Model):
    """One alert about a flag: an email to the teachers, a banner a teacher was shown, an escalation."""

    class Kind(models.TextChoices):
        EMAIL = "email", "Email to the course's alert addresses"
        BANNER = "banner", "Banner on a teacher's launch"
        ESCALATION = "escalation", "Escalation email to the administrators"

    class Status(models.TextChoices):
        SENT = "sent", "Sent"
        SHOWN = "shown", "Shown"
        SKIPPED = "skipped", "Not sent: no address is set"
        FAILED = "failed", "Sending failed"

    flag = models.ForeignKey(Flag, related_name="alerts", on_delete=models.CASCADE)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    recipients = models.JSONField(
        default=list, blank=True, help_text="The staff alert addresses it went to (from settings; never a student's)."
    )
    person = models.ForeignKey(
        Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL, help_text="Who saw the banner."
    )
    error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} ({self.status}) for flag {self.flag_id}"


class ReviewDecision(models.TextChoices):
    PENDING = "pending", "Not reviewed"
    APPROVED = "approved", "Approved for training"
    REJECTED = "rejected", "Rejected"


class ReplyReview(models.Model):
    """A teacher's review of one tutor reply: ratings, the corrected ideal reply, the decision."""

    message = models.OneToOneField(Message, related_name="review", on_delete=models.CASCADE)
    helpful = models.BooleanField(null=True, blank=True)
    correct = models.BooleanField(null=True, blank=True)
    pedagogically_sound = models.BooleanField(null=True, blank=True)
    age_appropriate = models.BooleanField(null=True, blank=True)
    correction = models.TextField(blank=True, help_text="The teacher's ideal reply, as written.")
    correction_scrubbed = models.TextField(blank=True, help_text="The correction with PII replaced: what is trained.")
    decision = models.CharField(max_length=16, choices=ReviewDecision.choices, default=ReviewDecision.PENDING)
    reviewed_by = models.ForeignKey(Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Review of message {self.message_id} ({self.decision})"


class ReviewEvent(models.Model):
    """Who changed what and when, for every write on the review screens and APIs."""

    course = models.ForeignKey(Course, related_name="review_events", on_delete=models.CASCADE)
    message = models.ForeignKey(Message, null=True, blank=True, related_name="review_events", on_delete=models.CASCADE)
    actor = models.ForeignKey(Person, null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["course", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor} at {self.created_at:%Y-%m-%d %H:%M}"


class ErasureRecord(models.Model):
    """That an erasure happened, and how much it removed; nothing about whom."""

    requested_via = models.CharField(max_length=32)  # command, lti_data_privacy, retention
    rows_deleted = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Erasure via {self.requested_via} at {self.created_at:%Y-%m-%d %H:%M}"

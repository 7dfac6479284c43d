"""The API's serializers: what each request takes (`…In`, `…IO`) and what each response is
(`…Out`, `…IO`), rendered from the models by the very serializers the schema declares
(`Serializer(instance).data`), so schema and responses cannot drift. The query-string filters
(`…FiltersIn`) are read by the API and by the review pages alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rest_framework import serializers

from tutor.alerts import ADDRESS_LIST
from tutor.errors import DomainError
from tutor.flags import NOTE_MAX_CHARS
from tutor.models import FlagAction, FlagAlert, FlagState, LearnerLevel, ReviewDecision
from tutor.parsers import StrictInputSerializer
from tutor.prompts import REPLY_LANGUAGES
from tutor.selectors import CATEGORY_PATTERN, STATE_FILTERS, ConversationFilters, FlagFilters

# -- fields -------------------------------------------------------------------------------------------


class PresenceField(serializers.BooleanField):
    """Whether the attribute is set (a guardrail's category: "screened")."""

    def to_representation(self, value) -> bool:
        return bool(value)


class IsoTimeField(serializers.CharField):
    """A time as Python's ISO 8601 (`+00:00`, not `Z`): what the chat has always sent."""

    def to_representation(self, value) -> str:
        return value.isoformat()


class PseudonymField(serializers.CharField):
    """A pseudonym's first 8 characters: enough to tell students apart on a teacher's screen."""

    def to_representation(self, value) -> str:
        return value[:8]


class ScrubbedCopyField(serializers.CharField):
    """A message's scrubbed copy; empty when it has none yet."""

    def get_attribute(self, instance):
        return super().get_attribute(instance) or ""


class FlaggedField(serializers.BooleanField):
    """Whether a flag on the message is unresolved (reads the prefetched flags)."""

    def to_representation(self, message) -> bool:
        return any(flag.state != FlagState.RESOLVED for flag in message.flags.all())


class ActorNameField(serializers.CharField):
    """The name the LMS sent for an action's actor (the serializer's context `names`, empty
    unless REVIEW_SHOW_NAMES)."""

    def to_representation(self, action) -> str:
        return self.context.get("names", {}).get(action.actor_id, "")


class MessageContentField(serializers.CharField):
    """Lengths are checked by the chat service (its own error codes); the schema states them
    (tutor/schema.py)."""


NOTE_PATTERN = r"[^\x00]*"


class PatternTextField(serializers.Field):
    """Text that must match one regular expression, the one its schema states (tutor/schema.py),
    trimmed once accepted. Not a CharField: drf-spectacular documents a blank-allowing CharField's
    pattern as "the pattern, or the empty text", which a pattern that takes the empty text overlaps."""

    default_error_messages = {"invalid": "Not valid here: {what}.", "max_length": "At most {limit} characters."}

    def __init__(self, *, pattern: str, max_length: int, what: str, **kwargs):
        self.pattern, self.max_length, self.what = pattern, max_length, what
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid", what=self.what)
        if len(data) > self.max_length:
            self.fail("max_length", limit=self.max_length)
        if not re.fullmatch(self.pattern, data):
            self.fail("invalid", what=self.what)
        return data.strip()

    def to_representation(self, value) -> str:
        return value


class AlertAddressesField(PatternTextField):
    """Staff addresses separated by commas, semicolons or spaces; empty clears them."""

    def __init__(self, **kwargs):
        super().__init__(pattern=ADDRESS_LIST, max_length=2000, what="email addresses separated by commas", **kwargs)


class NoteField(PatternTextField):
    """A teacher's note: any text without a NUL character (no database stores one)."""

    def __init__(self, **kwargs):
        super().__init__(pattern=NOTE_PATTERN, max_length=NOTE_MAX_CHARS, what="text without NUL characters", **kwargs)


# -- chat ---------------------------------------------------------------------------------------------


class MessageOut(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.ChoiceField(choices=["user", "assistant"], source="sender")
    content = serializers.CharField()
    status = serializers.CharField()
    screened = PresenceField(source="guardrail")
    rating = serializers.IntegerField(allow_null=True, source="student_rating")
    created_at = IsoTimeField()


class ConversationOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ConversationDetailOut(ConversationOut):
    messages = MessageOut(many=True)


TITLE_PATTERN = r"[^\x00]*[^\s\x00][^\x00]*"


class ConversationTitleIn(StrictInputSerializer):
    title = PatternTextField(
        pattern=TITLE_PATTERN,
        max_length=200,
        what="a title with some text in it",
        required=False,  # PATCH: what is left out stays as it is
        help_text="The conversation's new title (scrubbed of personal data like a message: teachers see titles).",
    )


class MessageIn(StrictInputSerializer):
    content = MessageContentField(trim_whitespace=True, allow_blank=False)


class ExchangeOut(serializers.Serializer):
    message = MessageOut()
    reply = MessageOut()


class RatingIn(StrictInputSerializer):
    value = serializers.ChoiceField(choices=[-1, 0, 1])


# -- the course's settings and the caller -------------------------------------------------------------


class StrictTextField(serializers.CharField):
    """Text, and only text: DRF's CharField turns a number into one ("5"), which a list's items
    (unlike a serializer's own fields, tutor/parsers.py) would otherwise accept."""

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ReplyLanguageField(serializers.ChoiceField):
    """One of the curated languages (tutor.prompts.REPLY_LANGUAGES), or the one the course
    already has (`current_reply_language` in the context): a value stored before there was a
    list stays saveable until a teacher picks another."""

    def __init__(self, **kwargs):
        super().__init__(choices=list(REPLY_LANGUAGES), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and data and data == self.context.get("current_reply_language"):
            return data
        return super().to_internal_value(data)


EXAMPLE_QUESTIONS_MAX = 6


class TutorSettingsIO(StrictInputSerializer):
    persona = serializers.CharField(allow_blank=True, max_length=4000)
    instructions = serializers.CharField(allow_blank=True, max_length=4000)
    subject = serializers.CharField(allow_blank=True, max_length=200)
    level = serializers.ChoiceField(choices=LearnerLevel.choices)
    reply_language = ReplyLanguageField(
        help_text="One of the listed languages, each in its own name; `the student's language` (the default) "
        "answers in the language the student writes in."
    )
    socratic = serializers.BooleanField()
    avoid = serializers.CharField(
        allow_blank=True,
        max_length=4000,
        required=False,
        help_text="What the tutor must not give, one a line (e.g. the answers to this week's graded exercises); "
        "the system prompt says `Do not give: …`. Left out: unchanged.",
    )
    greeting = serializers.CharField(
        allow_blank=True,
        max_length=1000,
        required=False,
        help_text="What a student sees before their first question. Left out: unchanged.",
    )
    example_questions = serializers.ListField(
        child=StrictTextField(max_length=200),
        max_length=EXAMPLE_QUESTIONS_MAX,
        required=False,
        help_text="Questions a student can start from. Left out: unchanged.",
    )


class TutorSettingsOut(TutorSettingsIO):
    """What GET answers. The persona, the instructions and the avoid-list are the teachers' own
    words to the tutor: teachers and administrators read them, a student gets the rest (what the
    tutor is set to teach, at which level, in which language, whether it is Socratic, and how the
    chat greets them)."""

    TEACHERS_ONLY = ("persona", "instructions", "avoid")

    persona = serializers.CharField(required=False, help_text="Teachers and administrators only.")
    instructions = serializers.CharField(required=False, help_text="Teachers and administrators only.")
    avoid = serializers.CharField(required=False, help_text="Teachers and administrators only.")
    greeting = serializers.CharField()
    example_questions = serializers.ListField(child=serializers.CharField())

    def to_representation(self, instance) -> dict:
        data = super().to_representation(instance)
        if not self.context.get("teacher"):
            for name in self.TEACHERS_ONLY:
                data.pop(name)
        return data


class TutorDraftIn(StrictInputSerializer):
    """The teachers' form as it stands, saved or not."""

    settings = TutorSettingsIO(help_text="The settings to try (avoid, greeting, example_questions: left out, saved).")
    placement_instructions = serializers.CharField(
        allow_blank=True,
        max_length=4000,
        required=False,
        help_text="The launched placement's instructions to try (left out: its saved ones; ignored without one).",
    )


class PromptPreviewOut(serializers.Serializer):
    system_prompt = serializers.CharField(source="text", help_text="Exactly what the tutor would be told.")
    tokens = serializers.IntegerField(
        allow_null=True, help_text="Its length in the served model's tokens (null: the model server cannot count now)."
    )
    context_tokens = serializers.IntegerField(allow_null=True, help_text="The model's context window.")
    reply_tokens = serializers.IntegerField(help_text="The room kept for a reply (MODEL_MAX_REPLY_TOKENS).")
    fits = serializers.BooleanField(
        allow_null=True, help_text="Whether a student's message still has room beside it and the reply."
    )


class TutorTryIn(TutorDraftIn):
    content = MessageContentField(
        trim_whitespace=True, allow_blank=False, help_text="The message a student would send."
    )


class TutorTryOut(serializers.Serializer):
    reply = serializers.CharField(source="text", allow_blank=True)
    screened = PresenceField(help_text="Whether a guardrail answered (or replaced the reply), as a student would see.")
    category = serializers.CharField(source="screened", allow_blank=True, help_text="The guardrail's category.")
    model = serializers.CharField(help_text="The model that answered (the course's adapter, or the base model).")
    fits = serializers.BooleanField(
        help_text="False: with the draft's system prompt the message does not fit the model's context; `reply` is "
        "then what a student would be told (`message_too_long`), and the model was not asked."
    )
    recorded = serializers.BooleanField(default=False, help_text="Always false: nothing of a try is stored.")


class PlacementIO(StrictInputSerializer):
    instructions = serializers.CharField(
        allow_blank=True,
        max_length=4000,
        help_text="Added to the course's instructions for conversations started in this placement.",
    )


class PlacementOut(PlacementIO):
    id = serializers.IntegerField()
    title = serializers.CharField(allow_blank=True, help_text="The LMS's title for the link.")


class SafetyAlertsIO(StrictInputSerializer):
    alert_emails = AlertAddressesField(
        source="safety_alert_emails",
        required=False,
        help_text="Staff addresses (separated by commas, semicolons or spaces) emailed at once when a student's "
        "message raises an urgent flag; teachers and administrators set them. Left out: unchanged.",
    )
    escalation_emails = AlertAddressesField(
        source="safety_escalation_emails",
        required=False,
        help_text="Addresses emailed when nobody acknowledges an urgent flag in time; only administrators change "
        "them. Left out: unchanged.",
    )


class MeOut(serializers.Serializer):
    role = serializers.ChoiceField(choices=["student", "teacher", "admin"])
    course = serializers.DictField()
    placement_id = serializers.IntegerField(allow_null=True)
    training = serializers.DictField(help_text="course_allows: the course's consent; opted_out: the caller's choice")


class TrainingChoiceIO(StrictInputSerializer):
    opted_out = serializers.BooleanField(source="training_opt_out")


class TrainingConsentIO(StrictInputSerializer):
    allowed = serializers.BooleanField(source="training_consent")


# -- review -------------------------------------------------------------------------------------------


class ReviewConversationOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    student = PseudonymField(source="person.pseudonym", help_text="The pseudonym's first 8 characters")
    updated_at = serializers.DateTimeField()
    replies = serializers.IntegerField(source="reply_count")
    open_flags = serializers.IntegerField()
    approved = serializers.IntegerField()
    unreviewed = serializers.BooleanField(source="has_unreviewed")
    rated_down = serializers.BooleanField(source="has_rated_down")


class ReviewOut(serializers.Serializer):
    helpful = serializers.BooleanField(allow_null=True)
    correct = serializers.BooleanField(allow_null=True)
    pedagogically_sound = serializers.BooleanField(allow_null=True)
    age_appropriate = serializers.BooleanField(allow_null=True)
    correction = serializers.CharField(allow_blank=True, source="correction_scrubbed")
    decision = serializers.ChoiceField(choices=ReviewDecision.choices)


class FlagOut(serializers.Serializer):
    id = serializers.IntegerField()
    category = serializers.CharField()
    urgent = serializers.BooleanField()
    state = serializers.ChoiceField(choices=FlagState.choices)
    reason = serializers.CharField(help_text="Scrubbed")
    created_at = serializers.DateTimeField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)
    escalated_at = serializers.DateTimeField(allow_null=True)


class ReviewMessageOut(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField(source="sender")
    content = ScrubbedCopyField(source="content_scrubbed", help_text="The scrubbed copy")
    status = serializers.CharField()
    screened = PresenceField(source="guardrail")
    student_rating = serializers.IntegerField(allow_null=True)
    flagged = FlaggedField(source="*", help_text="Whether a flag on it is unresolved (open or acknowledged)")
    flags = FlagOut(many=True, help_text="Every flag on the message, with its triage state")
    review = ReviewOut(allow_null=True)


class FlagActionOut(serializers.Serializer):
    action = serializers.ChoiceField(choices=FlagAction.Action.choices)
    state = serializers.ChoiceField(choices=FlagState.choices, help_text="The flag's state after the action")
    note = serializers.CharField(allow_blank=True, help_text="Scrubbed")
    actor = PseudonymField(
        source="actor.pseudonym", allow_null=True, help_text="The actor's pseudonym's first 8 characters"
    )
    actor_name = ActorNameField(source="*", allow_blank=True, help_text="The name the LMS sent (REVIEW_SHOW_NAMES)")
    created_at = serializers.DateTimeField()


class FlagAlertOut(serializers.Serializer):
    kind = serializers.ChoiceField(choices=FlagAlert.Kind.choices)
    status = serializers.ChoiceField(choices=FlagAlert.Status.choices)
    recipients = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class FlagMessageOut(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField(source="sender", help_text="user (the student's message) or assistant (a tutor reply)")
    content = ScrubbedCopyField(source="content_scrubbed", allow_blank=True, help_text="The scrubbed copy")


class FlagQueueOut(FlagOut):
    conversation_id = serializers.IntegerField()
    student = PseudonymField(source="conversation.person.pseudonym", help_text="The pseudonym's first 8 characters")
    message = FlagMessageOut()
    actions = FlagActionOut(many=True)
    alerts = FlagAlertOut(many=True, help_text="Emails and escalations (banner views are counted)")
    banner_views = serializers.IntegerField(help_text="How many times a teacher's launch showed it")


class FlagActionIn(StrictInputSerializer):
    # A note on its own is the page's "Add the note"; here a note goes with a change of state.
    action = serializers.ChoiceField(
        choices=[(a.value, a.label) for a in FlagAction.Action if a != FlagAction.Action.NOTE]
    )
    note = NoteField(required=False)


class ReviewIn(StrictInputSerializer):
    helpful = serializers.BooleanField(required=False, allow_null=True)
    correct = serializers.BooleanField(required=False, allow_null=True)
    pedagogically_sound = serializers.BooleanField(required=False, allow_null=True)
    age_appropriate = serializers.BooleanField(required=False, allow_null=True)
    correction = serializers.CharField(required=False, allow_blank=True, max_length=8000)
    decision = serializers.ChoiceField(choices=ReviewDecision.choices, required=False)
    flagged = serializers.BooleanField(required=False)


# -- filters (query strings) --------------------------------------------------------------------------


class FiltersIn(serializers.Serializer):
    """Query-string filters, read the same way by the API and the pages. A bad value is refused
    as a domain error with `error_code`, so the API answers 400 and a page shows the error page,
    in plain words, instead of ignoring it. An empty value is what the API's schema says it is
    (`blank_is_unset`: no filter; else refused); on a page's form (`form=True`) a field left
    empty is always no filter."""

    error_code = "bad_filter"
    field_error_codes: Mapping[str, str] = {}  # a field whose refusal has a code of its own
    blank_is_unset = False
    result: type

    @classmethod
    def read(cls, params: Mapping[str, str], *, form: bool = False):
        # A plain dict, not the QueryDict: DRF reads an empty form value as a missing one.
        data = {name: value for name, value in params.items() if value or not (form or cls.blank_is_unset)}
        filters = cls(data=data)
        if not filters.is_valid():
            fields = sorted(filters.errors)
            message = " ".join(str(error) for name in fields for error in filters.errors[name])
            code = next((cls.field_error_codes[name] for name in fields if name in cls.field_error_codes), None)
            raise DomainError(message, code=code or cls.error_code, fields=fields)
        return cls.result(**filters.validated_data)


class AppliedField(serializers.Field):
    """A filter that applies when set to 1 (any other value: it does not)."""

    def to_internal_value(self, data) -> bool:
        return data == "1"


class ConversationFiltersIn(FiltersIn):
    error_code = "bad_date"
    field_error_codes = {"student": "bad_filter", "q": "bad_filter"}
    blank_is_unset = True
    result = ConversationFilters

    flagged = AppliedField(required=False)
    unreviewed = AppliedField(required=False)
    rated_down = AppliedField(required=False)
    since = serializers.DateField(required=False, error_messages={"invalid": "since must be a date (YYYY-MM-DD)."})
    until = serializers.DateField(required=False, error_messages={"invalid": "until must be a date (YYYY-MM-DD)."})
    student = serializers.RegexField(
        r"^[0-9a-f]{8}\Z",
        required=False,
        help_text="A student: the first 8 characters of their pseudonym, as the review shows it",
        error_messages={"invalid": "student must be the 8 characters shown after # (0-9 and a-f)."},
    )
    q = serializers.CharField(
        source="text",
        required=False,
        max_length=200,
        help_text="Text in the title or in a message (the scrubbed copies)",
        error_messages={"max_length": "q (the text searched) is at most 200 characters."},
    )


class UrgentFilterField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=["1", "0"], **kwargs)

    def to_internal_value(self, data) -> bool:
        return super().to_internal_value(data) == "1"


class FlagFiltersIn(FiltersIn):
    result = FlagFilters

    state = serializers.ChoiceField(
        choices=[str(state) for state in STATE_FILTERS],
        required=False,
        error_messages={"invalid_choice": "state must be one of " + ", ".join(STATE_FILTERS) + "."},
    )
    category = serializers.RegexField(
        rf"^{CATEGORY_PATTERN.pattern}\Z",
        required=False,
        trim_whitespace=False,
        error_messages={
            "invalid": "category must be a category name (lower-case letters, digits and _).",
            "blank": "category must be a category name (lower-case letters, digits and _).",
        },
    )
    urgent = UrgentFilterField(required=False, error_messages={"invalid_choice": "urgent must be 1 or 0."})

"""The REST API (DRF; schema at /api/schema/). Views parse input, call one service, render output.

Authentication: the launch token (`Authorization: Bearer …`) or the launched
session. A caller only ever sees their own conversations in the launched course.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from tutor import alerts, chat, flags, review
from tutor.access import reviewer_get
from tutor.errors import DomainError
from tutor.models import Conversation, FlagAction, FlagAlert, FlagState, LearnerLevel, ReviewDecision, Role
from tutor.parsers import StrictInputSerializer
from tutor.selectors import launched_profile
from tutor.services import training_consent_set, training_opt_out_set


class ChatThrottle(SimpleRateThrottle):
    """Per-person chat rate limit (CHAT_RATE_LIMIT, e.g. `20/min`), answered with 429."""

    scope = "chat"

    def get_rate(self):
        return settings.CHAT_RATE_LIMIT

    def get_cache_key(self, request, view):
        return f"throttle:chat:{request.user.membership.person_id}"


class MessageOut(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()
    status = serializers.CharField()
    screened = serializers.BooleanField()
    rating = serializers.IntegerField(allow_null=True)
    created_at = serializers.CharField()


class ConversationOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ConversationDetailOut(ConversationOut):
    messages = MessageOut(many=True)


class MessageContentField(serializers.CharField):
    """Lengths are checked by the chat service (its own error codes); the schema states them
    (tutor/schema.py)."""


class MessageIn(StrictInputSerializer):
    content = MessageContentField(trim_whitespace=True, allow_blank=False)


class ExchangeOut(serializers.Serializer):
    message = MessageOut()
    reply = MessageOut()


class RatingIn(StrictInputSerializer):
    value = serializers.ChoiceField(choices=[-1, 0, 1])


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
        super().__init__(
            pattern=alerts.ADDRESS_LIST, max_length=2000, what="email addresses separated by commas", **kwargs
        )


class NoteField(PatternTextField):
    """A teacher's note: any text without a NUL character (no database stores one)."""

    def __init__(self, **kwargs):
        super().__init__(
            pattern=NOTE_PATTERN, max_length=flags.NOTE_MAX_CHARS, what="text without NUL characters", **kwargs
        )


class TutorSettingsIO(StrictInputSerializer):
    persona = serializers.CharField(allow_blank=True, max_length=4000)
    instructions = serializers.CharField(allow_blank=True, max_length=4000)
    subject = serializers.CharField(allow_blank=True, max_length=200)
    level = serializers.ChoiceField(choices=LearnerLevel.choices)
    reply_language = serializers.CharField(max_length=60)
    socratic = serializers.BooleanField()


class TutorSettingsOut(TutorSettingsIO):
    """What GET answers. The persona and the instructions are the teachers' own words to the
    tutor: teachers and administrators read them, a student gets the rest (what the tutor is
    set to teach, at which level, in which language, and whether it is Socratic)."""

    TEACHERS_ONLY = ("persona", "instructions")

    persona = serializers.CharField(required=False, help_text="Teachers and administrators only.")
    instructions = serializers.CharField(required=False, help_text="Teachers and administrators only.")

    def to_representation(self, instance) -> dict:
        data = super().to_representation(instance)
        if not self.context.get("teacher"):
            for name in self.TEACHERS_ONLY:
                data.pop(name)
        return data


class SafetyAlertsIO(StrictInputSerializer):
    alert_emails = AlertAddressesField(
        required=False,
        help_text="Staff addresses (separated by commas, semicolons or spaces) emailed at once when a student's "
        "message raises an urgent flag; teachers and administrators set them. Left out: unchanged.",
    )
    escalation_emails = AlertAddressesField(
        required=False,
        help_text="Addresses emailed when nobody acknowledges an urgent flag in time; only administrators change "
        "them. Left out: unchanged.",
    )


def conversation_payload(conversation: Conversation, *, with_messages: bool = False) -> dict:
    payload = {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
    }
    if with_messages:
        payload["messages"] = [chat.message_payload(m) for m in conversation.messages.order_by("id")]
    return payload


class MeOut(serializers.Serializer):
    role = serializers.ChoiceField(choices=["student", "teacher", "admin"])
    course = serializers.DictField()
    placement_id = serializers.IntegerField(allow_null=True)
    training = serializers.DictField(help_text="course_allows: the course's consent; opted_out: the caller's choice")


class TrainingChoiceIO(StrictInputSerializer):
    opted_out = serializers.BooleanField()


class TrainingConsentIO(StrictInputSerializer):
    allowed = serializers.BooleanField()


class ReviewConversationOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    student = serializers.CharField(help_text="The pseudonym's first 8 characters")
    updated_at = serializers.DateTimeField()
    replies = serializers.IntegerField()
    open_flags = serializers.IntegerField()
    approved = serializers.IntegerField()
    unreviewed = serializers.BooleanField()
    rated_down = serializers.BooleanField()


class ReviewOut(serializers.Serializer):
    helpful = serializers.BooleanField(allow_null=True)
    correct = serializers.BooleanField(allow_null=True)
    pedagogically_sound = serializers.BooleanField(allow_null=True)
    age_appropriate = serializers.BooleanField(allow_null=True)
    correction = serializers.CharField(allow_blank=True)
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
    role = serializers.CharField()
    content = serializers.CharField(help_text="The scrubbed copy")
    status = serializers.CharField()
    screened = serializers.BooleanField()
    student_rating = serializers.IntegerField(allow_null=True)
    flagged = serializers.BooleanField(help_text="Whether a flag on it is unresolved (open or acknowledged)")
    flags = FlagOut(many=True, help_text="Every flag on the message, with its triage state")
    review = ReviewOut(allow_null=True)


class FlagActionOut(serializers.Serializer):
    action = serializers.ChoiceField(choices=FlagAction.Action.choices)
    state = serializers.ChoiceField(choices=FlagState.choices, help_text="The flag's state after the action")
    note = serializers.CharField(allow_blank=True, help_text="Scrubbed")
    actor = serializers.CharField(allow_null=True, help_text="The actor's pseudonym's first 8 characters")
    actor_name = serializers.CharField(allow_blank=True, help_text="The name the LMS sent (REVIEW_SHOW_NAMES)")
    created_at = serializers.DateTimeField()


class FlagAlertOut(serializers.Serializer):
    kind = serializers.ChoiceField(choices=FlagAlert.Kind.choices)
    status = serializers.ChoiceField(choices=FlagAlert.Status.choices)
    recipients = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class FlagMessageOut(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField(help_text="user (the student's message) or assistant (a tutor reply)")
    content = serializers.CharField(allow_blank=True, help_text="The scrubbed copy")


class FlagQueueOut(FlagOut):
    conversation_id = serializers.IntegerField()
    student = serializers.CharField(help_text="The pseudonym's first 8 characters")
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


class MeApi(APIView):
    """The launched caller: role and course, and the training choices that apply to them."""

    @extend_schema(responses=MeOut)
    def get(self, request: Request) -> Response:
        return Response(launched_profile(launched=request.user))


class TrainingChoiceApi(APIView):
    """A student's own choice: may their conversations in this course train its tutor?"""

    @extend_schema(request=TrainingChoiceIO, responses=TrainingChoiceIO)
    def put(self, request: Request) -> Response:
        data = TrainingChoiceIO(data=request.data)
        data.is_valid(raise_exception=True)
        membership = training_opt_out_set(
            membership=request.user.membership, opted_out=data.validated_data["opted_out"]
        )
        return Response({"opted_out": membership.training_opt_out})


def reviewer_for(request: Request):
    return reviewer_get(person_id=request.user.membership.person_id, course_id=request.user.course_id)


class TrainingConsentApi(APIView):
    """Teachers and admins: may the launched course's conversations be used for training?"""

    @extend_schema(request=TrainingConsentIO, responses=TrainingConsentIO)
    def put(self, request: Request) -> Response:
        reviewer = reviewer_for(request)
        data = TrainingConsentIO(data=request.data)
        data.is_valid(raise_exception=True)
        tutor_settings = training_consent_set(
            course=reviewer.course, actor=reviewer, allowed=data.validated_data["allowed"]
        )
        return Response({"allowed": tutor_settings.training_consent})


class ReviewConversationListApi(APIView):
    """Teachers: the launched course's conversations. Filters: flagged, unreviewed, rated_down
    (1 to apply), since / until (YYYY-MM-DD)."""

    @extend_schema(responses=ReviewConversationOut(many=True))
    def get(self, request: Request) -> Response:
        from datetime import date

        reviewer = reviewer_for(request)
        params = request.query_params

        def day(name: str):
            try:
                return date.fromisoformat(params[name]) if params.get(name) else None
            except ValueError:
                raise DomainError(f"{name} must be a date (YYYY-MM-DD).", code="bad_date") from None

        filters = review.ConversationFilters(
            flagged=params.get("flagged") == "1",
            unreviewed=params.get("unreviewed") == "1",
            rated_down=params.get("rated_down") == "1",
            since=day("since"),
            until=day("until"),
        )
        rows = review.review_conversations(course_id=reviewer.course_id, filters=filters)[:500]
        return Response(
            [
                {
                    "id": c.id,
                    "title": c.title,
                    "student": c.person.pseudonym[:8],
                    "updated_at": c.updated_at,
                    "replies": c.reply_count,
                    "open_flags": c.open_flags,
                    "approved": c.approved,
                    "unreviewed": c.has_unreviewed,
                    "rated_down": c.has_rated_down,
                }
                for c in rows
            ]
        )


def flag_payload(flag) -> dict:
    return {
        "id": flag.id,
        "category": flag.category,
        "urgent": flag.urgent,
        "state": flag.state,
        "reason": flag.reason,
        "created_at": flag.created_at,
        "acknowledged_at": flag.acknowledged_at,
        "resolved_at": flag.resolved_at,
        "escalated_at": flag.escalated_at,
    }


def flag_queue_payload(flag, *, names: dict[int, str]) -> dict:
    return {
        **flag_payload(flag),
        "conversation_id": flag.conversation_id,
        "student": flag.conversation.person.pseudonym[:8],
        "message": {"id": flag.message_id, "role": flag.message.sender, "content": flag.message.content_scrubbed or ""},
        "actions": [
            {
                "action": action.action,
                "state": action.state,
                "note": action.note,
                "actor": action.actor.pseudonym[:8] if action.actor else None,
                "actor_name": names.get(action.actor_id, ""),
                "created_at": action.created_at,
            }
            for action in flag.actions.all()
        ],
        "alerts": [
            {"kind": alert.kind, "status": alert.status, "recipients": alert.recipients, "created_at": alert.created_at}
            for alert in flag.alerts.all()
        ],
        "banner_views": flag.banner_views,
    }


def review_message_payload(message) -> dict:
    reviewed = getattr(message, "review", None) if hasattr(message, "review") else None
    return {
        "id": message.id,
        "role": message.sender,
        "content": message.content_scrubbed or "",
        "status": message.status,
        "screened": bool(message.guardrail),
        "student_rating": message.student_rating,
        "flagged": any(flag.state != FlagState.RESOLVED for flag in message.flags.all()),
        "flags": [flag_payload(flag) for flag in message.flags.all()],
        "review": None
        if reviewed is None
        else {
            "helpful": reviewed.helpful,
            "correct": reviewed.correct,
            "pedagogically_sound": reviewed.pedagogically_sound,
            "age_appropriate": reviewed.age_appropriate,
            "correction": reviewed.correction_scrubbed,
            "decision": reviewed.decision,
        },
    }


class ReviewConversationDetailApi(APIView):
    @extend_schema(responses=ReviewMessageOut(many=True), operation_id="v1_review_conversation_messages")
    def get(self, request: Request, conversation_id: int) -> Response:
        reviewer = reviewer_for(request)
        conversation = review.review_conversation_get(course_id=reviewer.course_id, conversation_id=conversation_id)
        return Response([review_message_payload(m) for m in review.review_messages(conversation=conversation)])


class ReviewReplyApi(APIView):
    """Teachers: rate a tutor reply, write its correction, approve/reject it, flag/unflag it."""

    @extend_schema(request=ReviewIn, responses=ReviewMessageOut)
    def patch(self, request: Request, message_id: int) -> Response:
        reviewer = reviewer_for(request)
        data = ReviewIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        if "flagged" in fields:
            review.message_flag_set(reviewer=reviewer, message_id=message_id, flagged=fields["flagged"])
        ratings = {name: fields[name] for name in review.RATING_FIELDS if name in fields}
        if ratings or "correction" in fields or "decision" in fields or "flagged" not in fields:
            review.reply_review_update(
                reviewer=reviewer,
                message_id=message_id,
                ratings=ratings,
                correction=fields.get("correction"),
                decision=fields.get("decision"),
            )
        message = review.review_messages_one(course_id=reviewer.course_id, message_id=message_id)
        return Response(review_message_payload(message))


FLAG_FILTER_PARAMETERS = [
    OpenApiParameter("state", str, enum=list(flags.STATE_FILTERS), description="Default: unresolved"),
    OpenApiParameter("category", str, pattern="^[a-z0-9_]{1,64}$", description="A flag category, e.g. self_harm"),
    OpenApiParameter("urgent", str, enum=["1", "0"], description="1: urgent only; 0: the others"),
]


class ReviewFlagListApi(APIView):
    """Teachers: the launched course's safety queue (urgent first, newest first; at most 500)."""

    @extend_schema(responses=FlagQueueOut(many=True), parameters=FLAG_FILTER_PARAMETERS)
    def get(self, request: Request) -> Response:
        reviewer = reviewer_for(request)
        params = request.query_params
        state, urgent, category = params.get("state", "unresolved"), params.get("urgent"), params.get("category")
        if (
            state not in flags.STATE_FILTERS
            or urgent not in {None, "1", "0"}
            or (category is not None and not flags.CATEGORY_PATTERN.fullmatch(category))
        ):
            raise DomainError(
                "state must be one of " + ", ".join(flags.STATE_FILTERS) + "; urgent 1 or 0; category a category "
                "name (lower-case letters, digits and _).",
                code="bad_filter",
            )
        filters = flags.FlagFilters(state=state, category=category or "", urgent={"1": True, "0": False}.get(urgent))
        names = review.student_names(course_id=reviewer.course_id)
        rows = flags.flag_queue(course_id=reviewer.course_id, filters=filters)[:500]
        return Response([flag_queue_payload(flag, names=names) for flag in rows])


class ReviewFlagActionApi(APIView):
    """Teachers: acknowledge, resolve or reopen a flag of the launched course, with a note (scrubbed)."""

    error_statuses = (409,)  # flag_state_conflict: someone else changed it first

    @extend_schema(request=FlagActionIn, responses={201: FlagQueueOut})
    def post(self, request: Request, flag_id: int) -> Response:
        reviewer = reviewer_for(request)
        data = FlagActionIn(data=request.data)
        data.is_valid(raise_exception=True)
        flags.flag_act(
            reviewer=reviewer,
            flag_id=flag_id,
            action=data.validated_data["action"],
            note=data.validated_data.get("note", ""),
        )
        flag = flags.flag_one(course_id=reviewer.course_id, flag_id=flag_id)
        names = review.student_names(course_id=reviewer.course_id)
        return Response(flag_queue_payload(flag, names=names), status=status.HTTP_201_CREATED)


class ConversationListApi(APIView):
    @extend_schema(responses=ConversationOut(many=True))
    def get(self, request: Request) -> Response:
        conversations = Conversation.objects.filter(
            person_id=request.user.membership.person_id, course_id=request.user.course_id
        ).order_by("-updated_at")
        return Response([conversation_payload(c) for c in conversations])

    @extend_schema(request=None, responses={201: ConversationOut})
    def post(self, request: Request) -> Response:
        conversation = chat.conversation_start(launched=request.user)
        return Response(conversation_payload(conversation), status=status.HTTP_201_CREATED)


class ConversationDetailApi(APIView):
    @extend_schema(responses=ConversationDetailOut)
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = chat.conversation_get(launched=request.user, conversation_id=conversation_id)
        return Response(conversation_payload(conversation, with_messages=True))


class MessageCreateApi(APIView):
    """Send a message; the tutor's complete reply comes back in the same response."""

    throttle_classes = [ChatThrottle]

    @extend_schema(request=MessageIn, responses={201: ExchangeOut})
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = chat.conversation_get(launched=request.user, conversation_id=conversation_id)
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        posted = chat.message_post(conversation=conversation, content=data.validated_data["content"])
        reply = posted.screened_reply or chat.reply_generate(conversation=conversation)
        return Response(
            {"message": chat.message_payload(posted.message), "reply": chat.message_payload(reply)},
            status=status.HTTP_201_CREATED,
        )


class ReplyRetryApi(APIView):
    """Ask again for the tutor's reply to the last unanswered message (after a model failure)."""

    error_statuses = (409,)  # nothing_to_answer (documented in the schema)

    throttle_classes = [ChatThrottle]

    @extend_schema(request=None, responses={201: MessageOut})
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = chat.conversation_get(launched=request.user, conversation_id=conversation_id)
        reply = chat.reply_generate(conversation=conversation)
        return Response(chat.message_payload(reply), status=status.HTTP_201_CREATED)


class MessageRatingApi(APIView):
    @extend_schema(request=RatingIn, responses=MessageOut)
    def post(self, request: Request, message_id: int) -> Response:
        data = RatingIn(data=request.data)
        data.is_valid(raise_exception=True)
        message = chat.message_rate(launched=request.user, message_id=message_id, value=data.validated_data["value"])
        return Response(chat.message_payload(message))


class TutorSettingsApi(APIView):
    """The launched course's tutor settings; teachers and admins read all of them and may change them."""

    @extend_schema(responses=TutorSettingsOut)
    def get(self, request: Request) -> Response:
        tutor_settings = chat.tutor_settings_get(course_id=request.user.course_id)
        teacher = request.user.role in {Role.TEACHER, Role.ADMIN}
        return Response(TutorSettingsOut(tutor_settings, context={"teacher": teacher}).data)

    @extend_schema(request=TutorSettingsIO, responses=TutorSettingsIO)
    def put(self, request: Request) -> Response:
        data = TutorSettingsIO(data=request.data)
        data.is_valid(raise_exception=True)
        tutor_settings = chat.tutor_settings_update(launched=request.user, **data.validated_data)
        return Response(TutorSettingsIO(tutor_settings).data)


class SafetyAlertsApi(APIView):
    """Teachers and administrators: where the launched course's urgent flags are emailed (docs/alerts.md)."""

    @extend_schema(responses=SafetyAlertsIO)
    def get(self, request: Request) -> Response:
        reviewer = reviewer_for(request)
        return Response(alerts.alert_addresses_get(course_id=reviewer.course_id))

    @extend_schema(request=SafetyAlertsIO, responses=SafetyAlertsIO)
    def put(self, request: Request) -> Response:
        reviewer = reviewer_for(request)
        data = SafetyAlertsIO(data=request.data)
        data.is_valid(raise_exception=True)
        alerts.alert_addresses_set(
            actor=reviewer,
            alert_emails=data.validated_data.get("alert_emails"),
            escalation_emails=data.validated_data.get("escalation_emails"),
        )
        return Response(alerts.alert_addresses_get(course_id=reviewer.course_id))


class ServerSentEvent(serializers.Serializer):
    """One event of a reply stream: `start`, `token`…, then `done`, `replaced` or `error`; `data` is
    a JSON object (docs/errors.md for `error`)."""

    event = serializers.ChoiceField(choices=["start", "token", "replaced", "done", "error"])
    data = serializers.CharField(help_text="A JSON object.")


async def _sse(events) -> AsyncIterator[bytes]:
    async for event in events:
        name = event.pop("event")
        yield f"event: {name}\ndata: {json.dumps(event)}\n\n".encode()


async def _screened_events(posted: chat.Posted) -> AsyncIterator[dict]:
    reply = posted.screened_reply
    yield {"event": "start", "reply_id": reply.id, "message_id": posted.message.id}
    yield {"event": "replaced", "text": reply.content}
    yield {"event": "done", "reply": chat.message_payload(reply)}


def _event_stream(events) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_sse(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass tokens through as they come
    return response


class MessageStreamApi(APIView):
    """Send a message; the reply streams back as Server-Sent Events.

    Events: `start` {reply_id, message_id}, `token` {text}…, then `done` {reply}, or
    `replaced` {text} when a guardrail swapped the reply (followed by `done`), or
    `error` {code, message, message_id} when the model server failed (the message is
    kept; POST …/reply/stream/ retries). The stream is generated asynchronously: no
    thread is held while tokens arrive.
    """

    throttle_classes = [ChatThrottle]

    @extend_schema(request=MessageIn, responses={(200, "text/event-stream"): ServerSentEvent})
    def post(self, request: Request, conversation_id: int) -> StreamingHttpResponse:
        conversation = chat.conversation_get(launched=request.user, conversation_id=conversation_id)
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        posted = chat.message_post(conversation=conversation, content=data.validated_data["content"])
        if posted.screened_reply is not None:
            return _event_stream(_screened_events(posted))
        return _event_stream(chat.reply_stream(conversation=conversation))


class ReplyStreamApi(APIView):
    """Retry the reply to the last unanswered message, streamed (same events as above)."""

    error_statuses = (409,)  # nothing_to_answer (documented in the schema)

    throttle_classes = [ChatThrottle]

    @extend_schema(request=None, responses={(200, "text/event-stream"): ServerSentEvent})
    def post(self, request: Request, conversation_id: int) -> StreamingHttpResponse:
        conversation = chat.conversation_get(launched=request.user, conversation_id=conversation_id)
        if chat.unanswered_student_message(conversation=conversation) is None:
            raise chat.NothingToAnswer("There is no student message waiting for an answer.")
        return _event_stream(chat.reply_stream(conversation=conversation))

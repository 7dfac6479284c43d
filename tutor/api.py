"""The REST API (DRF; schema at /api/schema/). Views parse input (tutor.serializers), call one
service or selector, and render the output with the serializer their schema declares.

Authentication: the launch token (`Authorization: Bearer …`) or the launched session. A caller
only ever sees their own conversations in the launched course; the review APIs are for the
course's teachers and administrators (tutor.access.IsCourseReviewer sets `request.reviewer`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from tutor import alerts, chat, flags, review, selectors
from tutor.access import IsCourseReviewer
from tutor.models import Role
from tutor.serializers import (
    ConversationDetailOut,
    ConversationFiltersIn,
    ConversationOut,
    ConversationTitleIn,
    ExchangeOut,
    FlagActionIn,
    FlagFiltersIn,
    FlagQueueOut,
    MeOut,
    MessageIn,
    MessageOut,
    PlacementIO,
    PlacementOut,
    PromptPreviewOut,
    RatingIn,
    ReviewConversationOut,
    ReviewIn,
    ReviewMessageOut,
    SafetyAlertsIO,
    TrainingChoiceIO,
    TrainingConsentIO,
    TutorDraftIn,
    TutorSettingsIO,
    TutorSettingsOut,
    TutorTryIn,
    TutorTryOut,
)
from tutor.services import (
    conversation_delete,
    placement_instructions_set,
    training_consent_set,
    training_opt_out_set,
    tutor_settings_try,
    tutor_settings_update,
)


class ChatThrottle(SimpleRateThrottle):
    """Per-person chat rate limit (CHAT_RATE_LIMIT, e.g. `20/min`), answered with 429."""

    scope = "chat"

    def get_rate(self):
        return settings.CHAT_RATE_LIMIT

    def get_cache_key(self, request, view):
        return f"throttle:chat:{request.user.membership.person_id}"


class MeApi(APIView):
    """The launched caller: role and course, and the training choices that apply to them."""

    @extend_schema(responses=MeOut)
    def get(self, request: Request) -> Response:
        return Response(MeOut(selectors.launched_profile(launched=request.user)).data)


class TrainingChoiceApi(APIView):
    """A student's own choice: may their conversations in this course train its tutor?"""

    @extend_schema(request=TrainingChoiceIO, responses=TrainingChoiceIO)
    def put(self, request: Request) -> Response:
        data = TrainingChoiceIO(data=request.data)
        data.is_valid(raise_exception=True)
        membership = training_opt_out_set(
            membership=request.user.membership, opted_out=data.validated_data["training_opt_out"]
        )
        return Response(TrainingChoiceIO(membership).data)


class TrainingConsentApi(APIView):
    """Teachers and admins: may the launched course's conversations be used for training?"""

    permission_classes = [IsCourseReviewer]

    @extend_schema(request=TrainingConsentIO, responses=TrainingConsentIO)
    def put(self, request: Request) -> Response:
        data = TrainingConsentIO(data=request.data)
        data.is_valid(raise_exception=True)
        tutor_settings = training_consent_set(
            course=request.reviewer.course, actor=request.reviewer, allowed=data.validated_data["training_consent"]
        )
        return Response(TrainingConsentIO(tutor_settings).data)


class ReviewConversationListApi(APIView):
    """Teachers: the launched course's conversations. Filters: flagged, unreviewed, rated_down
    (1 to apply), since / until (YYYY-MM-DD)."""

    permission_classes = [IsCourseReviewer]

    @extend_schema(responses=ReviewConversationOut(many=True))
    def get(self, request: Request) -> Response:
        filters = ConversationFiltersIn.read(request.query_params)
        rows = selectors.review_conversations(course_id=request.reviewer.course_id, filters=filters)[:500]
        return Response(ReviewConversationOut(rows, many=True).data)


class ReviewConversationDetailApi(APIView):
    permission_classes = [IsCourseReviewer]

    @extend_schema(responses=ReviewMessageOut(many=True), operation_id="v1_review_conversation_messages")
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = selectors.review_conversation_get(
            course_id=request.reviewer.course_id, conversation_id=conversation_id
        )
        return Response(ReviewMessageOut(selectors.review_messages(conversation=conversation), many=True).data)


class ReviewReplyApi(APIView):
    """Teachers: rate a tutor reply, write its correction, approve/reject it, flag/unflag it."""

    permission_classes = [IsCourseReviewer]

    @extend_schema(request=ReviewIn, responses=ReviewMessageOut)
    def patch(self, request: Request, message_id: int) -> Response:
        data = ReviewIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        message = review.reply_review_patch(
            reviewer=request.reviewer,
            message_id=message_id,
            flagged=fields.get("flagged"),
            ratings={name: fields[name] for name in review.RATING_FIELDS if name in fields},
            correction=fields.get("correction"),
            decision=fields.get("decision"),
        )
        return Response(ReviewMessageOut(message).data)


FLAG_FILTER_PARAMETERS = [
    OpenApiParameter("state", str, enum=list(selectors.STATE_FILTERS), description="Default: unresolved"),
    OpenApiParameter("category", str, pattern="^[a-z0-9_]{1,64}$", description="A flag category, e.g. self_harm"),
    OpenApiParameter("urgent", str, enum=["1", "0"], description="1: urgent only; 0: the others"),
]


class ReviewFlagListApi(APIView):
    """Teachers: the launched course's safety queue (urgent first, newest first; at most 500)."""

    permission_classes = [IsCourseReviewer]

    @extend_schema(responses=FlagQueueOut(many=True), parameters=FLAG_FILTER_PARAMETERS)
    def get(self, request: Request) -> Response:
        course_id = request.reviewer.course_id
        filters = FlagFiltersIn.read(request.query_params)
        rows = selectors.flag_queue(course_id=course_id, filters=filters)[:500]
        names = selectors.student_names(course_id=course_id)
        return Response(FlagQueueOut(rows, many=True, context={"names": names}).data)


class ReviewFlagActionApi(APIView):
    """Teachers: acknowledge, resolve or reopen a flag of the launched course, with a note (scrubbed)."""

    permission_classes = [IsCourseReviewer]
    error_statuses = (409,)  # flag_state_conflict: someone else changed it first

    @extend_schema(request=FlagActionIn, responses={201: FlagQueueOut})
    def post(self, request: Request, flag_id: int) -> Response:
        reviewer = request.reviewer
        data = FlagActionIn(data=request.data)
        data.is_valid(raise_exception=True)
        flags.flag_act(
            reviewer=reviewer,
            flag_id=flag_id,
            action=data.validated_data["action"],
            note=data.validated_data.get("note", ""),
        )
        flag = selectors.flag_get(course_id=reviewer.course_id, flag_id=flag_id)
        names = selectors.student_names(course_id=reviewer.course_id)
        return Response(FlagQueueOut(flag, context={"names": names}).data, status=status.HTTP_201_CREATED)


class ConversationListApi(APIView):
    """The caller's conversations, latest first. POST makes an empty one (for API clients that want
    its id first); the chat page starts a conversation with its first message instead
    (`POST /api/v1/conversations/messages/stream/`), so no empty one is ever stored by it."""

    @extend_schema(responses=ConversationOut(many=True))
    def get(self, request: Request) -> Response:
        return Response(ConversationOut(selectors.conversations_list(launched=request.user), many=True).data)

    @extend_schema(request=None, responses={201: ConversationOut})
    def post(self, request: Request) -> Response:
        conversation = chat.conversation_start(launched=request.user)
        return Response(ConversationOut(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailApi(APIView):
    """One of the caller's own conversations: read it, rename it (PATCH), delete it (DELETE: as
    erasure does, refused with 409 `conversation_held_for_safety` while an urgent flag on it is
    unresolved)."""

    error_statuses = (409,)  # conversation_held_for_safety (DELETE)

    @extend_schema(responses=ConversationDetailOut)
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        return Response(ConversationDetailOut(conversation).data)

    @extend_schema(request=ConversationTitleIn, responses=ConversationOut)
    def patch(self, request: Request, conversation_id: int) -> Response:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        data = ConversationTitleIn(data=request.data)
        data.is_valid(raise_exception=True)
        if "title" in data.validated_data:
            conversation = chat.conversation_rename(conversation=conversation, title=data.validated_data["title"])
        return Response(ConversationOut(conversation).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, conversation_id: int) -> Response:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        conversation_delete(conversation=conversation)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageCreateApi(APIView):
    """Send a message; the tutor's complete reply comes back in the same response."""

    throttle_classes = [ChatThrottle]

    @extend_schema(request=MessageIn, responses={201: ExchangeOut})
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        posted = chat.message_post(conversation=conversation, content=data.validated_data["content"])
        reply = posted.screened_reply or chat.reply_generate(conversation=conversation)
        return Response(ExchangeOut({"message": posted.message, "reply": reply}).data, status=status.HTTP_201_CREATED)


class ReplyRetryApi(APIView):
    """Ask again for the tutor's reply to the last unanswered message (after a model failure)."""

    error_statuses = (409,)  # nothing_to_answer (documented in the schema)

    throttle_classes = [ChatThrottle]

    @extend_schema(request=None, responses={201: MessageOut})
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        reply = chat.reply_generate(conversation=conversation)
        return Response(MessageOut(reply).data, status=status.HTTP_201_CREATED)


class MessageRatingApi(APIView):
    @extend_schema(request=RatingIn, responses=MessageOut)
    def post(self, request: Request, message_id: int) -> Response:
        data = RatingIn(data=request.data)
        data.is_valid(raise_exception=True)
        message = chat.message_rate(launched=request.user, message_id=message_id, value=data.validated_data["value"])
        return Response(MessageOut(message).data)


def _settings_context(launched) -> dict:
    return {"current_reply_language": selectors.tutor_settings_get(course_id=launched.course_id).reply_language}


class TutorSettingsApi(APIView):
    """The launched course's tutor settings; teachers and admins read all of them and may change them."""

    @extend_schema(responses=TutorSettingsOut)
    def get(self, request: Request) -> Response:
        tutor_settings = selectors.tutor_settings_get(course_id=request.user.course_id)
        teacher = request.user.role in {Role.TEACHER, Role.ADMIN}
        return Response(TutorSettingsOut(tutor_settings, context={"teacher": teacher}).data)

    @extend_schema(request=TutorSettingsIO, responses=TutorSettingsOut)
    def put(self, request: Request) -> Response:
        data = TutorSettingsIO(data=request.data, context=_settings_context(request.user))
        data.is_valid(raise_exception=True)
        tutor_settings = tutor_settings_update(launched=request.user, **data.validated_data)
        return Response(TutorSettingsOut(tutor_settings, context={"teacher": True}).data)


def _draft(request: Request, serializer_class: type) -> tuple[selectors.TutorDraft, dict]:
    data = serializer_class(data=request.data, context=_settings_context(request.user))
    data.is_valid(raise_exception=True)
    fields = data.validated_data
    draft = selectors.tutor_draft(
        launched=request.user,
        changes=fields["settings"],
        placement_instructions=fields.get("placement_instructions"),
    )
    return draft, fields


class TutorSettingsPreviewApi(APIView):
    """Teachers and admins: the exact system prompt the tutor would get under the form's settings
    (saved or not) in the launched placement, and its length in the model's tokens. Saves nothing."""

    permission_classes = [IsCourseReviewer]

    @extend_schema(request=TutorDraftIn, responses=PromptPreviewOut)
    def post(self, request: Request) -> Response:
        draft, _ = _draft(request, TutorDraftIn)
        return Response(PromptPreviewOut(selectors.system_prompt_preview(draft=draft)).data)


class TutorSettingsTryApi(APIView):
    """Teachers and admins: "try it as a student". The tutor's reply to one message under the
    form's settings (saved or not), through the guardrails a student's message goes through, and
    nothing recorded: no conversation, message, flag or dataset line, no log of the text (a
    self-harm message gets the safe reply and raises no flag)."""

    permission_classes = [IsCourseReviewer]
    throttle_classes = [ChatThrottle]

    @extend_schema(request=TutorTryIn, responses=TutorTryOut)
    def post(self, request: Request) -> Response:
        draft, fields = _draft(request, TutorTryIn)
        tried = tutor_settings_try(launched=request.user, draft=draft, content=fields["content"])
        return Response(TutorTryOut(tried).data)


class PlacementApi(APIView):
    """Teachers and admins: a placement of the launched course (an LTI link) and its own
    instructions, added to the course's in conversations started there. Another course's: 404."""

    permission_classes = [IsCourseReviewer]

    @extend_schema(responses=PlacementOut)
    def get(self, request: Request, placement_id: int) -> Response:
        placement = selectors.placement_get(course_id=request.reviewer.course_id, placement_id=placement_id)
        return Response(PlacementOut(placement).data)

    @extend_schema(request=PlacementIO, responses=PlacementOut)
    def put(self, request: Request, placement_id: int) -> Response:
        placement = selectors.placement_get(course_id=request.reviewer.course_id, placement_id=placement_id)
        data = PlacementIO(data=request.data)
        data.is_valid(raise_exception=True)
        placement = placement_instructions_set(
            launched=request.user, placement=placement, instructions=data.validated_data["instructions"]
        )
        return Response(PlacementOut(placement).data)


class SafetyAlertsApi(APIView):
    """Teachers and administrators: where the launched course's urgent flags are emailed (docs/alerts.md)."""

    permission_classes = [IsCourseReviewer]

    @extend_schema(responses=SafetyAlertsIO)
    def get(self, request: Request) -> Response:
        return Response(SafetyAlertsIO(selectors.tutor_settings_get(course_id=request.reviewer.course_id)).data)

    @extend_schema(request=SafetyAlertsIO, responses=SafetyAlertsIO)
    def put(self, request: Request) -> Response:
        data = SafetyAlertsIO(data=request.data)
        data.is_valid(raise_exception=True)
        tutor_settings = alerts.alert_addresses_set(
            actor=request.reviewer,
            alert_emails=data.validated_data.get("safety_alert_emails"),
            escalation_emails=data.validated_data.get("safety_escalation_emails"),
        )
        return Response(SafetyAlertsIO(tutor_settings).data)


class ServerSentEvent(serializers.Serializer):
    """One event of a reply stream: `start`, `token`…, then `done`, `replaced` or `error`; `data` is
    a JSON object (docs/errors.md for `error`)."""

    event = serializers.ChoiceField(choices=["start", "token", "replaced", "done", "error"])
    data = serializers.CharField(help_text="A JSON object.")


async def _sse(events: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    async for event in events:
        name = event.pop("event")
        if name == "done":  # the reply as every other response shows a message
            event["reply"] = MessageOut(event["reply"]).data
        yield f"event: {name}\ndata: {json.dumps(event)}\n\n".encode()


async def _screened_events(posted: chat.Posted) -> AsyncIterator[dict]:
    reply = posted.screened_reply
    yield {
        "event": "start",
        "reply_id": reply.id,
        "message_id": posted.message.id,
        "conversation_id": posted.message.conversation_id,
    }
    yield {"event": "replaced", "text": reply.content}
    yield {"event": "done", "reply": reply}


def _event_stream(events: AsyncIterator[dict]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_sse(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass tokens through as they come
    return response


class MessageStreamApi(APIView):
    """Send a message; the reply streams back as Server-Sent Events.

    Events: `start` {reply_id, message_id, conversation_id}, `token` {text}…, then `done` {reply}, or
    `replaced` {text} when a guardrail swapped the reply (followed by `done`), or
    `error` {code, message, message_id} when the model server failed (the message is
    kept; POST …/reply/stream/ retries). The stream is generated asynchronously: no
    thread is held while tokens arrive.
    """

    throttle_classes = [ChatThrottle]

    @extend_schema(request=MessageIn, responses={(200, "text/event-stream"): ServerSentEvent})
    def post(self, request: Request, conversation_id: int) -> StreamingHttpResponse:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        posted = chat.message_post(conversation=conversation, content=data.validated_data["content"])
        if posted.screened_reply is not None:
            return _event_stream(_screened_events(posted))
        return _event_stream(chat.reply_stream(conversation=conversation))


class ConversationStartStreamApi(APIView):
    """Start a conversation with its first message; the reply streams back (the events above, the
    new conversation's id in `start`). A refused message (empty, too long) stores nothing."""

    throttle_classes = [ChatThrottle]

    @extend_schema(
        request=MessageIn,
        responses={(200, "text/event-stream"): ServerSentEvent},
        operation_id="v1_conversation_start_stream",
    )
    def post(self, request: Request) -> StreamingHttpResponse:
        data = MessageIn(data=request.data)
        data.is_valid(raise_exception=True)
        posted = chat.conversation_start_with_message(launched=request.user, content=data.validated_data["content"])
        if posted.screened_reply is not None:
            return _event_stream(_screened_events(posted))
        return _event_stream(chat.reply_stream(conversation=posted.message.conversation))


class ReplyStreamApi(APIView):
    """Retry the reply to the last unanswered message, streamed (same events as above)."""

    error_statuses = (409,)  # nothing_to_answer (documented in the schema)

    throttle_classes = [ChatThrottle]

    @extend_schema(request=None, responses={(200, "text/event-stream"): ServerSentEvent})
    def post(self, request: Request, conversation_id: int) -> StreamingHttpResponse:
        conversation = selectors.conversation_get(launched=request.user, conversation_id=conversation_id)
        return _event_stream(chat.reply_stream(conversation=conversation))

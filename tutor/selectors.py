"""Every read of the tutor app, in one module (the writes are its services: tutor.services,
tutor.chat, tutor.review, tutor.flags, tutor.alerts).

Selectors are keyword-only and typed, never write, and import no service, task or view. A lookup
the caller is not allowed to see raises the error contract's NotFound (404), so views and services
call them without checking again. Sections: the course and its people; chat (the model's input);
review; flags; alerts.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Exists, Max, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from serving.client import ModelServerUnavailable, PromptSize, prompt_size
from tutor.auth import Launched
from tutor.errors import MessageTooLong, NotFound
from tutor.models import (
    UNRESOLVED_FLAG_STATES,
    Conversation,
    Course,
    Flag,
    FlagAction,
    FlagAlert,
    FlagState,
    MemberName,
    Membership,
    Message,
    MessageStatus,
    Placement,
    ReviewDecision,
    Role,
    TutorSettings,
)
from tutor.prompts import system_prompt_for

Sender = Message.Sender

# -- the course and its people -----------------------------------------------------------------------


def launched_profile(*, launched: Launched) -> dict:
    """What the launched page shows about the caller: role and course, no personal data."""
    course = launched.membership.course
    consent = TutorSettings.objects.filter(course=course).values_list("training_consent", flat=True).first()
    return {
        "role": launched.role,
        "course": {"id": course.id, "title": course.title, "label": course.label},
        "placement_id": launched.placement_id,
        "training": {"course_allows": bool(consent), "opted_out": launched.membership.training_opt_out},
    }


def course_roster_names(*, course_id: int) -> list[str]:
    """Every name the LMS gave for this course's members: the scrubber's deny-list."""
    names: list[str] = []
    for member in MemberName.objects.filter(membership__course_id=course_id).only(
        "full_name", "given_name", "family_name"
    ):
        names.extend(member.names)
    return names


def student_names(*, course_id: int) -> dict[int, str]:
    """person id → the name the LMS sent, for teachers' screens (REVIEW_SHOW_NAMES)."""
    if not settings.REVIEW_SHOW_NAMES:
        return {}
    return {
        name.membership.person_id: str(name)
        for name in MemberName.objects.filter(membership__course_id=course_id).select_related("membership")
    }


def tutor_settings_get(*, course_id: int) -> TutorSettings:
    """The course's tutor settings; the defaults (unsaved) until a teacher or a consent saves them."""
    return TutorSettings.objects.filter(course_id=course_id).first() or TutorSettings(course_id=course_id)


def placement_get(*, course_id: int, placement_id: int) -> Placement:
    """A placement of the course; 404 for another course's (we do not say it exists)."""
    placement = Placement.objects.filter(pk=placement_id, course_id=course_id).first()
    if placement is None:
        raise NotFound("No such placement in this course.")
    return placement


@dataclass(frozen=True)
class TutorDraft:
    """The tutor as a teacher is editing it, saved or not: unsaved copies of the course's settings
    and of the launched placement, with the form's values on them. Never saved."""

    course: Course
    tutor_settings: TutorSettings
    placement: Placement | None

    @property
    def system_prompt(self) -> str:
        return system_prompt_for(self.tutor_settings, course=self.course, placement=self.placement)


def tutor_draft(*, launched: Launched, changes: Mapping[str, object], placement_instructions: str | None) -> TutorDraft:
    """The course's saved settings with `changes` (TutorSettingsIO's fields) on top, and the
    launched placement with `placement_instructions` (None: its saved ones)."""
    saved = tutor_settings_get(course_id=launched.course_id)
    # A copy without a primary key: saving it by mistake could not change the course's settings.
    draft = TutorSettings(
        **{
            field.attname: getattr(saved, field.attname)
            for field in TutorSettings._meta.concrete_fields
            if not field.primary_key
        }
    )
    for name, value in changes.items():
        setattr(draft, name, value)
    placement = None
    if launched.placement_id is not None:
        saved_placement = Placement.objects.filter(pk=launched.placement_id, course_id=launched.course_id).first()
        if saved_placement is not None:
            placement = Placement(
                course_id=saved_placement.course_id,
                title=saved_placement.title,
                instructions=saved_placement.instructions if placement_instructions is None else placement_instructions,
            )
    return TutorDraft(course=launched.membership.course, tutor_settings=draft, placement=placement)


@dataclass(frozen=True)
class PromptPreview:
    text: str
    tokens: int | None  # None: the model server could not count now
    context_tokens: int | None
    reply_tokens: int

    @property
    def fits(self) -> bool | None:
        """Whether a student's message still has room beside the prompt and the reply."""
        if self.tokens is None:
            return None
        return self.tokens + self.reply_tokens < self.context_tokens


def system_prompt_preview(*, draft: TutorDraft) -> PromptPreview:
    """The exact system prompt the draft gives the tutor, measured in the served model's tokens
    (the count the chat fits every prompt with, tutor.selectors.prompt_fit)."""
    text = draft.system_prompt
    try:
        size = prompt_size(messages=[{"role": "system", "content": text}], course_id=draft.course.pk)
    except ModelServerUnavailable:
        return PromptPreview(text=text, tokens=None, context_tokens=None, reply_tokens=settings.MODEL_MAX_REPLY_TOKENS)
    return PromptPreview(
        text=text, tokens=size.tokens, context_tokens=size.context_tokens, reply_tokens=settings.MODEL_MAX_REPLY_TOKENS
    )


def course_exports_recent(*, course: Course, limit: int = 10) -> QuerySet:
    """The course's latest dataset exports (the training app's rows, read through the relation it
    declares, so tutor imports nothing of training)."""
    return course.dataset_exports.order_by("-id")[:limit]


# -- chat: conversations and the model's input --------------------------------------------------------


def conversation_get(*, launched: Launched, conversation_id: int) -> Conversation:
    """The caller's own conversation in the launched course; 404 for anyone else's."""
    conversation = (
        Conversation.objects.select_related("course")
        .filter(pk=conversation_id, person_id=launched.membership.person_id, course_id=launched.course_id)
        .first()
    )
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def conversations_list(*, launched: Launched) -> QuerySet[Conversation]:
    """The caller's conversations in the launched course, latest first."""
    return Conversation.objects.filter(person_id=launched.membership.person_id, course_id=launched.course_id).order_by(
        "-updated_at"
    )


def unanswered_student_message(*, conversation: Conversation) -> Message | None:
    """The last student message when no complete reply follows it: a failed reply, or one cut
    short (the student may ask for it again), does not answer it."""
    last = (
        conversation.messages.exclude(status__in=[MessageStatus.FAILED, MessageStatus.INTERRUPTED])
        .order_by("-id")
        .first()
    )
    if last is not None and last.sender == Sender.STUDENT:
        return last
    return None


def system_prompt_get(*, conversation: Conversation) -> str:
    """The system prompt the conversation's next reply is generated under: the course's settings
    now, and the instructions of the placement the conversation was started in."""
    return system_prompt_for(
        tutor_settings_get(course_id=conversation.course_id),
        course=conversation.course,
        placement=conversation.placement,
    )


def _history_rows(*, conversation: Conversation) -> list[Message]:
    """The recent messages the model sees, oldest first: screened exchanges, failed replies and
    empty rows stay out of the model's context."""
    rows = list(
        conversation.messages.exclude(status=MessageStatus.FAILED)
        .filter(guardrail="")
        .exclude(content="")
        .order_by("-id")[: settings.CHAT_HISTORY_MESSAGES]
    )[::-1]
    # A retry after a reply was cut short answers the student's turn again, not the cut reply.
    while rows and rows[-1].status == MessageStatus.INTERRUPTED:
        rows.pop()
    return rows


def _turns(rows: list[Message]) -> list[dict]:
    """User/assistant alternation: consecutive student messages (after a failure) are joined into
    one turn, and the history starts with a student turn."""
    turns: list[dict] = []
    for row in rows:
        if turns and turns[-1]["role"] == row.sender:
            turns[-1]["content"] += "\n\n" + row.content
        else:
            turns.append({"role": row.sender, "content": row.content})
    while turns and turns[0]["role"] != Sender.STUDENT:
        turns.pop(0)
    return turns


def prompt_messages(*, conversation: Conversation) -> list[dict]:
    """System prompt + the recent history, before it is fitted to the model's context window."""
    system = {"role": "system", "content": system_prompt_get(conversation=conversation)}
    return [system, *_turns(_history_rows(conversation=conversation))]


def prompt_fit(*, conversation: Conversation) -> list[dict]:
    """The model's input for the next reply, within the served model's context window with room
    for the reply: the oldest messages are dropped first, so no message (not even one stored
    before lengths were counted in tokens) can break a conversation for good.

    Raises ModelServerUnavailable when the model server cannot count, and MessageTooLong when the
    newest student message alone does not fit."""
    system = {"role": "system", "content": system_prompt_get(conversation=conversation)}
    rows = _history_rows(conversation=conversation)
    while True:
        messages = [system, *_turns(rows)]
        size = prompt_size(messages=messages, course_id=conversation.course_id)
        if size.fits(reply_tokens=settings.MODEL_MAX_REPLY_TOKENS):
            return messages
        if len(rows) <= 1:
            raise _too_long_for_model(size)
        rows = rows[1:]


def _too_long_for_model(size: PromptSize) -> MessageTooLong:
    room = size.context_tokens - settings.MODEL_MAX_REPLY_TOKENS
    return MessageTooLong(
        f"Your message is too long for the tutor's model: with the tutor's instructions it comes to "
        f"{size.tokens} tokens, and the model can read {room} while leaving room for its answer. "
        "Emoji and some scripts count for several tokens each. Shorten it or split it in parts.",
        tokens=size.tokens,
        limit_tokens=room,
    )


def draft_prompt_fit(*, draft: TutorDraft, content: str) -> list[dict]:
    """The model's input for one message under a draft (no history: the try-it box is one
    exchange), refused like a chat message when it does not fit the served model's context.
    Raises ModelServerUnavailable when the model server cannot count."""
    messages = [{"role": "system", "content": draft.system_prompt}, {"role": "user", "content": content}]
    size = prompt_size(messages=messages, course_id=draft.course.pk)
    if not size.fits(reply_tokens=settings.MODEL_MAX_REPLY_TOKENS):
        raise _too_long_for_model(size)
    return messages


def message_fits_model(*, conversation: Conversation, content: str) -> None:
    """Refuses, before anything is stored, a message the served model cannot read with room for a
    reply. A model server that cannot count now does not stop the message: it is stored, and the
    reply (or its retry) measures the prompt again."""
    messages = [
        {"role": "system", "content": system_prompt_get(conversation=conversation)},
        {"role": "user", "content": content},
    ]
    try:
        size = prompt_size(messages=messages, course_id=conversation.course_id)
    except ModelServerUnavailable:
        return
    if not size.fits(reply_tokens=settings.MODEL_MAX_REPLY_TOKENS):
        raise _too_long_for_model(size)


def student_reply_get(*, launched: Launched, message_id: int) -> Message:
    """A tutor reply in one of the caller's own conversations in the launched course."""
    message = (
        Message.objects.filter(
            pk=message_id,
            sender=Sender.TUTOR,
            conversation__person_id=launched.membership.person_id,
            conversation__course_id=launched.course_id,
        )
        .select_related("conversation")
        .first()
    )
    if message is None:
        raise NotFound("No such tutor reply.")
    return message


# -- review -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationFilters:
    flagged: bool = False
    unreviewed: bool = False
    rated_down: bool = False
    since: date | None = None
    until: date | None = None
    student: str = ""  # the first 8 characters of the student's pseudonym, as the pages show it
    text: str = ""  # found in the title or in a message's scrubbed copy (never the raw text)


def review_conversations(*, course_id: int, filters: ConversationFilters) -> QuerySet[Conversation]:
    replies = Message.objects.filter(conversation=OuterRef("pk"), sender=Sender.TUTOR)
    conversations = Conversation.objects.filter(course_id=course_id).annotate(
        reply_count=Count("messages", filter=Q(messages__sender=Sender.TUTOR), distinct=True),
        open_flags=Count("flags", filter=Q(flags__state__in=UNRESOLVED_FLAG_STATES), distinct=True),
        approved=Count("messages", filter=Q(messages__review__decision=ReviewDecision.APPROVED), distinct=True),
        has_unreviewed=Exists(
            replies.filter(status=MessageStatus.COMPLETE, guardrail="").exclude(
                review__decision__in=[ReviewDecision.APPROVED, ReviewDecision.REJECTED]
            )
        ),
        has_rated_down=Exists(replies.filter(student_rating=-1)),
    )
    if filters.flagged:
        conversations = conversations.filter(open_flags__gt=0)
    if filters.unreviewed:
        conversations = conversations.filter(has_unreviewed=True)
    if filters.rated_down:
        conversations = conversations.filter(has_rated_down=True)
    if filters.since:
        conversations = conversations.filter(updated_at__date__gte=filters.since)
    if filters.until:
        conversations = conversations.filter(updated_at__date__lte=filters.until)
    if filters.student:
        conversations = conversations.filter(person__pseudonym__startswith=filters.student)
    if filters.text:
        # The scrubbed copy only: a search for a name must not find the messages it was removed from.
        found = Message.objects.filter(conversation=OuterRef("pk"), content_scrubbed__icontains=filters.text)
        conversations = conversations.filter(Q(title__icontains=filters.text) | Exists(found))
    return conversations.select_related("person").order_by("-updated_at", "-id")


def _pending_replies() -> QuerySet[Message]:
    """Tutor replies a teacher can still approve or reject (complete, not screened, undecided)."""
    return (
        Message.objects.filter(sender=Sender.TUTOR, status=MessageStatus.COMPLETE, guardrail="")
        .exclude(review__decision__in=[ReviewDecision.APPROVED, ReviewDecision.REJECTED])
        .order_by("id")
    )


def review_pending_reply_ids(*, course_id: int, conversation_ids: list[int]) -> list[int]:
    """The undecided replies of the course's conversations among `conversation_ids` (bulk review)."""
    return list(
        _pending_replies()
        .filter(conversation__course_id=course_id, conversation_id__in=conversation_ids)
        .values_list("id", flat=True)
    )


def review_next_unreviewed(*, course_id: int, after: Conversation | None = None) -> Conversation | None:
    """The next conversation with undecided replies, in the course page's order (latest first),
    after `after`; from the top again when none follows it."""
    waiting = Conversation.objects.filter(
        course_id=course_id, pk__in=_pending_replies().values("conversation_id")
    ).order_by("-updated_at", "-id")
    if after is None:
        return waiting.first()
    later_in_list = Q(updated_at__lt=after.updated_at) | Q(updated_at=after.updated_at, id__lt=after.id)
    return waiting.filter(later_in_list).first() or waiting.exclude(pk=after.pk).first()


def review_conversation_get(*, course_id: int, conversation_id: int) -> Conversation:
    conversation = Conversation.objects.filter(pk=conversation_id, course_id=course_id).first()
    if conversation is None:
        raise NotFound("No such conversation in this course.")
    return conversation


def review_messages(*, conversation: Conversation) -> list[Message]:
    return list(conversation.messages.select_related("review").prefetch_related("flags").order_by("id"))


def review_message_get(*, course_id: int, message_id: int) -> Message:
    """A message of the course as the review screens show it (its review and flags loaded)."""
    message = (
        Message.objects.select_related("review", "conversation")
        .prefetch_related("flags")
        .filter(pk=message_id, conversation__course_id=course_id)
        .first()
    )
    if message is None:
        raise NotFound("No such message in this course.")
    return message


def review_reply_get(*, course_id: int, message_id: int) -> Message:
    """A tutor reply of the course, the one a teacher rates, corrects or approves."""
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, sender=Sender.TUTOR, conversation__course_id=course_id)
        .first()
    )
    if message is None:
        raise NotFound("No such tutor reply in this course.")
    return message


def course_overview(*, course_id: int, weeks: int = 8) -> dict:
    """Conversations per week, the share of replies rated helpful, open flags, review progress."""
    since = timezone.now() - timedelta(weeks=weeks)
    per_week = (
        Conversation.objects.filter(course_id=course_id, created_at__gte=since)
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(count=Count("id"))
        .order_by("week")
    )
    replies = Message.objects.filter(conversation__course_id=course_id, sender=Sender.TUTOR)
    teacher_rated = replies.filter(review__helpful__isnull=False)
    student_rated = replies.filter(student_rating__isnull=False)

    def share(queryset, condition: Q) -> float | None:
        total = queryset.count()
        return round(100 * queryset.filter(condition).count() / total) if total else None

    return {
        "per_week": [{"week": row["week"].date(), "count": row["count"]} for row in per_week],
        "conversations": Conversation.objects.filter(course_id=course_id).count(),
        "replies": replies.count(),
        "helpful_teacher_pct": share(teacher_rated, Q(review__helpful=True)),
        "helpful_student_pct": share(student_rated, Q(student_rating=1)),
        "open_flags": flags_unresolved(course_id=course_id).count(),  # what the safety queue lists
        "approved": replies.filter(review__decision=ReviewDecision.APPROVED).count(),
        "corrected": replies.filter(review__decision=ReviewDecision.APPROVED).exclude(review__correction="").count(),
        "rejected": replies.filter(review__decision=ReviewDecision.REJECTED).count(),
    }


@dataclass(frozen=True)
class StudentActivity:
    person_id: int
    pseudonym: str  # the first 8 characters, as the pages show it
    name: str  # the name the LMS sent ("" unless REVIEW_SHOW_NAMES)
    conversations: int
    questions: int
    rated_down: int
    last_active: datetime | None


def course_student_activity(*, course_id: int, names: dict[int, str]) -> list[StudentActivity]:
    """Every student of the course with their conversations, questions and replies rated down,
    the most recently active first (two queries, whatever the number of students)."""
    activity = {
        row["person_id"]: row
        for row in Conversation.objects.filter(course_id=course_id)
        .values("person_id")
        .annotate(
            conversations=Count("id", distinct=True),
            questions=Count("messages", filter=Q(messages__sender=Sender.STUDENT)),
            rated_down=Count("messages", filter=Q(messages__student_rating=-1)),
            last_active=Max("updated_at"),
        )
    }
    students = Membership.objects.filter(course_id=course_id, role=Role.STUDENT).values_list(
        "person_id", "person__pseudonym"
    )
    rows = [
        StudentActivity(
            person_id=person_id,
            pseudonym=pseudonym[:8],
            name=names.get(person_id, ""),
            conversations=activity.get(person_id, {}).get("conversations", 0),
            questions=activity.get(person_id, {}).get("questions", 0),
            rated_down=activity.get(person_id, {}).get("rated_down", 0),
            last_active=activity.get(person_id, {}).get("last_active"),
        )
        for person_id, pseudonym in students
    ]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(rows, key=lambda row: (row.last_active or oldest, row.questions), reverse=True)


STOPWORDS_DIR = Path(__file__).resolve().parent / "data" / "stopwords"
# Letters only, three or more; the scrubber's placeholders (<PERSON>…) and LaTeX commands
# (\frac, \sqrt) are not words of the question and are removed before.
TOPIC_WORD = re.compile(r"[^\W\d_]{3,}(?:['’-][^\W\d_]+)*")
NOT_WORDS = re.compile(r"<[A-Z_]+>|\\[A-Za-z]+")


@functools.cache
def topic_stopwords() -> frozenset[str]:
    """Stop words of English, Spanish, French and German, and words of asking ("explain", "help")."""
    words: set[str] = set()
    for path in sorted(STOPWORDS_DIR.glob("*.txt")):
        words.update(line.strip() for line in path.read_text().splitlines() if line.strip() and line[0] != "#")
    return frozenset(words)


@dataclass(frozen=True)
class Topics:
    words: list[tuple[str, int]]  # a word and in how many questions it appears, most first
    questions: int  # how many questions were read
    since: date


def student_topics(*, course_id: int, weeks: int = 8, limit: int = 15, sample: int = 2000) -> Topics:
    """The words students use most in their questions of the last `weeks`: each word counted once
    per question, stop words and words of asking left out, in the scrubbed copies only (no name
    removed from a question comes back here). At most the latest `sample` questions are read."""
    since = timezone.now() - timedelta(weeks=weeks)
    texts = list(
        Message.objects.filter(
            conversation__course_id=course_id, sender=Sender.STUDENT, created_at__gte=since, guardrail=""
        )
        .exclude(content_scrubbed=None)
        .order_by("-id")
        .values_list("content_scrubbed", flat=True)[:sample]
    )
    stopwords = topic_stopwords()
    counts: Counter[str] = Counter()
    for text in texts:
        words = {word.lower() for word in TOPIC_WORD.findall(NOT_WORDS.sub(" ", text))}
        counts.update(word for word in words if word not in stopwords)
    return Topics(words=counts.most_common(limit), questions=len(texts), since=since.date())


def replies_rated_down(*, course_id: int, limit: int = 10) -> list[Message]:
    """The latest tutor replies a student rated down (for the teacher to look at first)."""
    return list(
        Message.objects.filter(conversation__course_id=course_id, sender=Sender.TUTOR, student_rating=-1)
        .select_related("conversation__person", "review")
        .order_by("-id")[:limit]
    )


def review_export_messages(*, course_id: int, filters: ConversationFilters) -> Iterator[Message]:
    """Every message of the conversations the filters select, with its review and flags, in
    conversation order: the CSV export's rows (read in chunks, a bounded number of queries per chunk)."""
    conversation_ids = list(review_conversations(course_id=course_id, filters=filters).values_list("pk", flat=True))
    return (
        Message.objects.filter(conversation__course_id=course_id, conversation_id__in=conversation_ids)
        .select_related("conversation__person", "review")
        .prefetch_related("flags")
        .order_by("-conversation__updated_at", "conversation_id", "id")
        .iterator(chunk_size=500)
    )


# -- flags --------------------------------------------------------------------------------------------

CATEGORY_LABELS = {
    "self_harm": "Possible self-harm",
    "abuse": "Possible abuse or bullying",
    "prompt_injection": "Tried to override the tutor's instructions",
    "instructions_leak": "Tutor reply repeated its instructions",
    "unsafe_output": "Tutor reply with unsafe content",
    "teacher": "Flagged by a teacher",
}

CATEGORY_PATTERN = re.compile(r"[a-z0-9_]{1,64}")

STATE_FILTERS: dict[str, tuple[str, ...] | None] = {
    "unresolved": UNRESOLVED_FLAG_STATES,
    FlagState.OPEN: (FlagState.OPEN,),
    FlagState.ACKNOWLEDGED: (FlagState.ACKNOWLEDGED,),
    FlagState.RESOLVED: (FlagState.RESOLVED,),
    "all": None,
}


def category_label(category: str) -> str:
    return CATEGORY_LABELS.get(category, category.replace("_", " ").capitalize())


def category_urgent(category: str) -> bool:
    """Whether a flag of this category needs an adult now (SAFETY_URGENT_CATEGORIES: self-harm and
    abuse by default). The guardrails' verdicts say so themselves; this serves flags raised
    without one (a teacher's flag on a reply)."""
    return category in {name.strip() for name in settings.SAFETY_URGENT_CATEGORIES.split(",") if name.strip()}


@dataclass(frozen=True)
class FlagFilters:
    state: str = "unresolved"  # a key of STATE_FILTERS
    category: str = ""
    urgent: bool | None = None


def flags_unresolved(*, course_id: int) -> QuerySet[Flag]:
    return Flag.objects.filter(course_id=course_id, state__in=UNRESOLVED_FLAG_STATES)


def flag_queue(*, course_id: int, filters: FlagFilters) -> QuerySet[Flag]:
    """The course's flags for the safety queue, urgent first, newest first."""
    flags = Flag.objects.filter(course_id=course_id)
    states = STATE_FILTERS.get(filters.state, UNRESOLVED_FLAG_STATES)
    if states is not None:
        flags = flags.filter(state__in=states)
    if filters.category:
        flags = flags.filter(category=filters.category)
    if filters.urgent is not None:
        flags = flags.filter(urgent=filters.urgent)
    return (
        flags.select_related("message", "conversation__person")
        .prefetch_related(
            Prefetch("actions", queryset=FlagAction.objects.select_related("actor")),
            Prefetch("alerts", queryset=FlagAlert.objects.exclude(kind=FlagAlert.Kind.BANNER)),
        )
        .annotate(banner_views=Count("alerts", filter=Q(alerts__kind=FlagAlert.Kind.BANNER)))
        .order_by("-urgent", "-created_at", "-id")
    )


def flag_get(*, course_id: int, flag_id: int) -> Flag:
    """One flag of the course, loaded as the safety queue shows it."""
    flag = flag_queue(course_id=course_id, filters=FlagFilters(state="all")).filter(pk=flag_id).first()
    if flag is None:
        raise NotFound("No such flag in this course.")
    return flag


def flag_counts(*, course_id: int) -> dict[str, int]:
    """Flags per state, and `unresolved` (open + acknowledged): the overview's "open flags"."""
    per_state = dict(
        Flag.objects.filter(course_id=course_id).values_list("state").annotate(n=Count("id")).values_list("state", "n")
    )
    counts = {state: per_state.get(state, 0) for state in FlagState.values}
    counts["unresolved"] = sum(counts[state] for state in UNRESOLVED_FLAG_STATES)
    counts["all"] = sum(per_state.values())
    return counts


def flag_categories(*, course_id: int) -> list[str]:
    return sorted(set(Flag.objects.filter(course_id=course_id).values_list("category", flat=True)))


def flags_for_banner(*, course_id: int) -> list[Flag]:
    """The urgent flags nobody has resolved yet: the banner of every teacher launch."""
    return list(flags_unresolved(course_id=course_id).filter(urgent=True).order_by("created_at", "id"))


# -- alerts -------------------------------------------------------------------------------------------

ADDRESS_SEPARATORS = r"[\s,;]"


def alert_addresses_split(text: str) -> list[str]:
    """The addresses in a list separated by commas, semicolons or spaces, each once, in order."""
    return list(dict.fromkeys(part for part in re.split(rf"{ADDRESS_SEPARATORS}+", text.strip()) if part))


def _addresses(*, course_id: int, field: str, deployment_wide: list[str]) -> list[str]:
    own = TutorSettings.objects.filter(course_id=course_id).values_list(field, flat=True).first() or ""
    # Read leniently: what is stored was validated when saved, and an alert must not fail on a read.
    return list(dict.fromkeys([*alert_addresses_split(own), *deployment_wide]))


def course_alert_addresses(*, course_id: int) -> list[str]:
    return _addresses(course_id=course_id, field="safety_alert_emails", deployment_wide=settings.SAFETY_ALERT_EMAILS)


def course_escalation_addresses(*, course_id: int) -> list[str]:
    return _addresses(
        course_id=course_id, field="safety_escalation_emails", deployment_wide=settings.SAFETY_ADMIN_EMAILS
    )


def flag_for_alert(*, flag_id: int) -> Flag | None:
    """A flag with what its alert email quotes (course, message, the student's pseudonym)."""
    return Flag.objects.select_related("course", "message", "conversation__person").filter(pk=flag_id).first()


def flags_escalation_due(*, now) -> list[int]:
    """The urgent flags still open past their escalation time and not escalated yet."""
    return list(
        Flag.objects.filter(
            urgent=True, state=FlagState.OPEN, escalated_at__isnull=True, escalate_at__lte=now
        ).values_list("id", flat=True)
    )

"""The system prompt a course's tutor gets, from its teachers' settings (and the placement's own
instructions); and the record of the prompts replies were generated under (the export trains each
conversation under its own).

`system_prompt_for` is the one place the prompt is written: the chat, the teachers' preview and
their "try it as a student" box all call it, so what a teacher previews is what students get."""

from __future__ import annotations

import hashlib

from tutor.models import Course, Placement, SystemPrompt, TutorSettings

SOCRATIC = (
    "Teach the Socratic way: do not give the final answer or the full solution. Ask one guiding question at a "
    "time, give hints, and let the student take each step; confirm when they get it right."
)

STUDENTS_LANGUAGE = "the student's language"
# The reply languages a teacher picks from, each in its own name (what a speaker of it looks for),
# stored as the text itself: the prompt says "Reply in Español.", and the safety replies find
# their language by these names (tutor/data/safety/*.yaml `names`, accents ignored).
REPLY_LANGUAGES = (
    STUDENTS_LANGUAGE,
    "English",
    "Español",
    "Français",
    "Deutsch",
    "Italiano",
    "Português",
    "Nederlands",
    "Polski",
    "Čeština",
    "Slovenčina",
    "Magyar",
    "Română",
    "Български",
    "Ελληνικά",
    "Türkçe",
    "Русский",
    "Українська",
    "Svenska",
    "Norsk",
    "Dansk",
    "Suomi",
    "Català",
    "Euskara",
    "Galego",
    "Cymraeg",
    "Gaeilge",
    "العربية",
    "עברית",
    "فارسی",
    "हिन्दी",
    "বাংলা",
    "اردو",
    "Kiswahili",
    "Bahasa Indonesia",
    "Tiếng Việt",
    "ไทย",
    "中文（简体）",
    "中文（繁體）",
    "日本語",
    "한국어",
)

AVOID_LEAD = "Do not give"


def avoid_items(text: str) -> list[str]:
    """The avoid-list's entries: one a line, blank lines left out."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def system_prompt_for(tutor_settings: TutorSettings, *, course: Course, placement: Placement | None = None) -> str:
    """The course's prompt, then what it must not give (CodeHelp's avoid-list), then the
    placement's own instructions last, so an assignment's context adds to the course's."""
    subject = tutor_settings.subject or course.title or "this course"
    lines = [
        tutor_settings.persona.strip() or "You are a helpful tutor.",
        f"You tutor students of {subject} ({tutor_settings.get_level_display().lower()} level).",
        f"Reply in {tutor_settings.reply_language}.",
        "Use Markdown; write mathematics in LaTeX between $…$ or $$…$$.",
        "Stay on the course's topics, be accurate, and say so when you are not sure.",
    ]
    if tutor_settings.socratic:
        lines.append(SOCRATIC)
    if tutor_settings.instructions.strip():
        lines.append("Your teachers' instructions: " + tutor_settings.instructions.strip())
    avoid = avoid_items(tutor_settings.avoid)
    if avoid:
        lines.append(
            f"{AVOID_LEAD}: "
            + "; ".join(avoid)
            + ". If the student asks for one of these, say that you cannot give it here and help them another way."
        )
    if placement is not None and placement.instructions.strip():
        where = f" ({placement.title})" if placement.title else ""
        lines.append(f"Instructions for this assignment{where}: " + placement.instructions.strip())
    return "\n".join(lines)


def system_prompt_record(*, text: str) -> SystemPrompt:
    """The stored copy of a system prompt, created the first time a reply is generated under it."""
    prompt, _ = SystemPrompt.objects.get_or_create(
        sha256=hashlib.sha256(text.encode()).hexdigest(), defaults={"text": text}
    )
    return prompt

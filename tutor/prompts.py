"""The system prompt a course's tutor gets, from its teachers' settings; and the record of the
prompts replies were generated under (the export trains each conversation under its own)."""

from __future__ import annotations

import hashlib

from tutor.models import Course, SystemPrompt, TutorSettings

SOCRATIC = (
    "Teach the Socratic way: do not give the final answer or the full solution. Ask one guiding question at a "
    "time, give hints, and let the student take each step; confirm when they get it right."
)


def system_prompt_for(tutor_settings: TutorSettings, *, course: Course) -> str:
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
    return "\n".join(lines)


def system_prompt_record(*, text: str) -> SystemPrompt:
    """The stored copy of a system prompt, created the first time a reply is generated under it."""
    prompt, _ = SystemPrompt.objects.get_or_create(
        sha256=hashlib.sha256(text.encode()).hexdigest(), defaults={"text": text}
    )
    return prompt

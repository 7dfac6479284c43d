"""Flag reasons written before they were scrubbed: a withheld tutor reply was kept as its first
200 characters, as generated, and a teacher's own reason as typed. Teachers read both (the
flag badge's tooltip), so they are scrubbed here the way new ones are: with the course's roster
and what the conversation's other messages hold."""

from django.db import migrations

ORIGINAL_REPLY = " Original reply: "
TEACHER_DEFAULT = "Flagged by a teacher."
CUT = 200  # the old code kept this many characters of the withheld reply


def _scrub_existing_reasons(apps, schema_editor):
    Flag = apps.get_model("tutor", "Flag")
    Message = apps.get_model("tutor", "Message")
    MemberName = apps.get_model("tutor", "MemberName")
    flags = [
        flag
        for flag in Flag.objects.all().only(
            "id", "reason", "course_id", "conversation_id", "message_id", "raised_by_id"
        )
        if ORIGINAL_REPLY in flag.reason or (flag.raised_by_id is not None and flag.reason != TEACHER_DEFAULT)
    ]
    if not flags:
        return  # a fresh database never loads Presidio here
    from tutor import privacy

    rosters: dict[int, list[str]] = {}
    for flag in flags:
        if flag.course_id not in rosters:
            rosters[flag.course_id] = [
                name
                for row in MemberName.objects.filter(membership__course_id=flag.course_id)
                for name in (row.full_name, row.given_name, row.family_name)
                if name
            ]
        context = [
            content
            for content, found in Message.objects.filter(conversation_id=flag.conversation_id)
            .exclude(pk=flag.message_id)
            .values_list("content", "pii_found")
            if found and content
        ]
        if ORIGINAL_REPLY in flag.reason:
            head, _, original = flag.reason.partition(ORIGINAL_REPLY)
            if len(original) >= CUT and " " in original:
                original = original[: original.rindex(" ")] + " …"  # its last word may be half a value
            reason = (
                head + ORIGINAL_REPLY + privacy.scrub(original, names=rosters[flag.course_id], context=context).text
            )
        else:
            reason = privacy.scrub(flag.reason, names=rosters[flag.course_id], context=context).text
        if reason != flag.reason:
            Flag.objects.filter(pk=flag.pk).update(reason=reason[:300])


class Migration(migrations.Migration):
    dependencies = [("tutor", "0004_message_system_prompt")]

    operations = [migrations.RunPython(_scrub_existing_reasons, migrations.RunPython.noop, elidable=True)]

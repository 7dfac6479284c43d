"""Flags get a triage state (open, acknowledged, resolved), urgency, escalation times, their
history (FlagAction) and their alerts (FlagAlert); courses get staff alert addresses.

Flags stored before: a resolved one is `resolved` (and counts as acknowledged when it was
resolved); self-harm and abuse flags are urgent, so they show in the teachers' banner, but they
get no escalation time: escalating weeks-old flags to the administrators on upgrade would bury
today's."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import F

URGENT_CATEGORIES = ["self_harm", "abuse"]


def _states_of_existing_flags(apps, schema_editor):
    Flag = apps.get_model("tutor", "Flag")
    Flag.objects.filter(resolved_at__isnull=False).update(
        state="resolved", acknowledged_at=F("resolved_at"), acknowledged_by=F("resolved_by")
    )
    Flag.objects.filter(category__in=URGENT_CATEGORIES).update(urgent=True)


class Migration(migrations.Migration):

    dependencies = [
        ('tutor', '0005_flag_reasons_scrubbed'),
    ]

    operations = [
        migrations.CreateModel(
            name='FlagAction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('action', models.CharField(choices=[('acknowledge', 'Acknowledged'), ('resolve', 'Resolved'), ('reopen', 'Reopened'), ('note', 'Note')], max_length=16)),
                ('state', models.CharField(choices=[('open', 'Open'), ('acknowledged', 'Acknowledged'), ('resolved', 'Resolved')], help_text="The flag's state after the action.", max_length=16)),
                ('note', models.TextField(blank=True, help_text='Scrubbed before it is stored: every teacher of the course reads it.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.CreateModel(
            name='FlagAlert',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('email', "Email to the course's alert addresses"), ('banner', "Banner on a teacher's launch"), ('escalation', 'Escalation email to the administrators')], max_length=16)),
                ('status', models.CharField(choices=[('sent', 'Sent'), ('shown', 'Shown'), ('skipped', 'Not sent: no address is set'), ('failed', 'Sending failed')], max_length=16)),
                ('recipients', models.JSONField(blank=True, default=list, help_text="The staff alert addresses it went to (from settings; never a student's).")),
                ('error', models.CharField(blank=True, max_length=200)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.AddField(
            model_name='flag',
            name='acknowledged_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='flag',
            name='acknowledged_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='tutor.person'),
        ),
        migrations.AddField(
            model_name='flag',
            name='escalate_at',
            field=models.DateTimeField(blank=True, help_text='When this urgent flag, still open, goes to the administrators (NULL: never).', null=True),
        ),
        migrations.AddField(
            model_name='flag',
            name='escalated_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='flag',
            name='state',
            field=models.CharField(choices=[('open', 'Open'), ('acknowledged', 'Acknowledged'), ('resolved', 'Resolved')], default='open', max_length=16),
        ),
        migrations.AddField(
            model_name='flag',
            name='urgent',
            field=models.BooleanField(default=False, help_text='Self-harm or abuse: the teachers are alerted, the administrators if nobody acts.'),
        ),
        migrations.AddField(
            model_name='tutorsettings',
            name='safety_alert_emails',
            field=models.TextField(blank=True, help_text="Comma-separated addresses emailed when a student's message raises an urgent flag (set by the course's teachers)."),
        ),
        migrations.AddField(
            model_name='tutorsettings',
            name='safety_escalation_emails',
            field=models.TextField(blank=True, help_text="Comma-separated addresses emailed when nobody acknowledges an urgent flag in time (set by the course's administrators)."),
        ),
        migrations.AddIndex(
            model_name='flag',
            index=models.Index(fields=['course', 'state'], name='flag_course_state'),
        ),
        migrations.AddIndex(
            model_name='flag',
            index=models.Index(fields=['state', 'escalate_at'], name='flag_escalation_due'),
        ),
        migrations.AddField(
            model_name='flagaction',
            name='actor',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='tutor.person'),
        ),
        migrations.AddField(
            model_name='flagaction',
            name='flag',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='actions', to='tutor.flag'),
        ),
        migrations.AddField(
            model_name='flagalert',
            name='flag',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='alerts', to='tutor.flag'),
        ),
        migrations.AddField(
            model_name='flagalert',
            name='person',
            field=models.ForeignKey(blank=True, help_text='Who saw the banner.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='tutor.person'),
        ),
        migrations.RunPython(_states_of_existing_flags, migrations.RunPython.noop),
    ]

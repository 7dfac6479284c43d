"""A dataset never outlives its data: deleting a conversation (erasure, retention) purges
every export that holds a line of it, files included, once the deletion commits."""

from __future__ import annotations

from django.db.models.signals import pre_delete
from django.dispatch import receiver

from training.datasets import exports_purge
from training.selectors import dataset_exports_holding
from tutor.models import Conversation


@receiver(pre_delete, sender=Conversation, dispatch_uid="training.purge_exports_of_deleted_conversation")
def _purge_exports(sender, instance: Conversation, **kwargs) -> None:
    export_ids = dataset_exports_holding(conversation_id=instance.pk)
    if export_ids:
        exports_purge(export_ids=export_ids)

from django.contrib import admin

from training.models import DatasetExport


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin):
    list_display = ("id", "course", "status", "train_examples", "eval_examples", "created_at", "purged_at")
    list_filter = ("status",)
    readonly_fields = [field.name for field in DatasetExport._meta.fields]

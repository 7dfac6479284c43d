from django.contrib import admin

from tutor.models import Course, ErasureRecord, FlagAlert, Membership, Placement, ReviewEvent


@admin.register(Course)
class CourseAdmin(admin.ModelAdmin):
    list_display = ("title", "label", "lms_issuer", "lms_context_id", "created_at")
    search_fields = ("title", "label", "lms_context_id")


@admin.register(Placement)
class PlacementAdmin(admin.ModelAdmin):
    list_display = ("title", "course", "lms_resource_link_id", "created_at")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("person", "course", "role", "training_opt_out", "last_launch_at")
    list_filter = ("role", "training_opt_out")


@admin.register(ReviewEvent)
class ReviewEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "course", "action", "actor", "message")
    list_filter = ("action",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # an audit trail is not edited


@admin.register(ErasureRecord)
class ErasureRecordAdmin(admin.ModelAdmin):
    list_display = ("created_at", "requested_via", "rows_deleted")

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FlagAlert)
class FlagAlertAdmin(admin.ModelAdmin):
    """For the operator: whether safety alert emails go out (a failed one names the error's type)."""

    list_display = ("created_at", "kind", "status", "flag", "error")
    list_filter = ("kind", "status")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

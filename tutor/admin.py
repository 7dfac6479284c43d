from django.contrib import admin

from tutor.models import Course, Membership, Placement


@admin.register(Course)
class CourseAdmin(admin.ModelAdmin):
    list_display = ("title", "label", "lms_issuer", "lms_context_id", "created_at")
    search_fields = ("title", "label", "lms_context_id")


@admin.register(Placement)
class PlacementAdmin(admin.ModelAdmin):
    list_display = ("title", "course", "lms_resource_link_id", "created_at")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("person", "course", "role", "last_launch_at")
    list_filter = ("role",)

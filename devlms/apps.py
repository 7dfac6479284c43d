from django.apps import AppConfig


class DevLmsConfig(AppConfig):
    name = "devlms"
    verbose_name = "Development LMS"

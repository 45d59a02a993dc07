from django.apps import AppConfig


class WaitlistConfig(AppConfig):
    name = "waitlist"
    default_auto_field = "django.db.models.BigAutoField"

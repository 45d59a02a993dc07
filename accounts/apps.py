from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        # Registers the OpenAPI descriptions of our authentication classes.
        from accounts import schema  # noqa: F401
        from accounts.throttling import login_succeeded

        user_logged_in.connect(login_succeeded, dispatch_uid="accounts.login_succeeded")

"""Users and an account's quota overrides. Accounts, service keys and personal tokens, whose
changes operators make with a reason and an audit record, are the operator console's
(console/admin/)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import AccountQuota, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined"]
    search_fields = ["email"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


QUOTA_FIELDS = ["rate_limit_per_minute", "rate_limit_burst", "daily_cap_credits"]


@admin.register(AccountQuota)
class AccountQuotaAdmin(admin.ModelAdmin):
    """Operators override one account's spend limits here (empty: the setting; 0: off); the
    account's other fields change only through the console's audited actions."""

    list_display = ["public_id", *QUOTA_FIELDS]
    search_fields = ["public_id", "user__email"]
    fields = ["public_id", *QUOTA_FIELDS]
    readonly_fields = ["public_id"]

    def save_model(self, request, obj, form, change) -> None:  # type: ignore[no-untyped-def]
        # Only the overrides: a whole-row save would write back the balances as they were read,
        # over any spend made since.
        obj.save(update_fields=[name for name in QUOTA_FIELDS if name in form.changed_data])

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

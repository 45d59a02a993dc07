from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import Account, ServiceKey, User, UserToken
from .services import service_key_revoke


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


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["public_id", "user", "status", "available_credits", "held_credits", "created_at"]
    list_filter = ["status"]
    search_fields = ["public_id", "user__email"]
    list_select_related = ["user"]
    # Balances change only through the ledger service; status changes get their own
    # operator action (with a reason) in the operator console.
    readonly_fields = [
        "public_id",
        "user",
        "created_at",
        "period_anchor_day",
        "first_period_start",
        "free_period_start",
        "available_credits",
        "held_credits",
    ]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # accounts are opened by signup, together with their user

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    fields = ["name", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        # Through the service, so that the authentication cache forgets the keys at once.
        for key in queryset.filter(revoked_at__isnull=True):
            service_key_revoke(key=key)
        self.message_user(request, "Revoked.")

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # revoke instead: debits and ledger entries name the key

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # keys are made by `manage.py create_service_key`, which shows the key once


@admin.register(UserToken)
class UserTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "prefix", "key_hash", "created_at", "last_used_at"]
    search_fields = ["user__email"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

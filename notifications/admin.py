"""Operators' view of notifications: events and their deliveries, each webhook attempt (status,
latency, error) with a resend action, emails, endpoints, preferences and auto-recharges."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from notifications.models import (
    AutoRecharge,
    EmailDelivery,
    Event,
    NotificationPreferences,
    Recharge,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from notifications.services.webhooks import delivery_resend


class ReadOnly(admin.ModelAdmin):
    """Records the services write: operators read them (and resend), nobody edits them."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["attempted_at", "succeeded", "status_code", "latency_ms", "error"]
    readonly_fields = ["attempted_at", "succeeded", "status_code", "latency_ms", "error"]
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-attempted_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly):
    list_display = ["event", "endpoint", "status", "attempts", "next_attempt_at", "completed_at", "last_error"]
    list_filter = ["status", "event__type"]
    search_fields = ["event__public_id", "endpoint__public_id", "endpoint__url"]
    list_select_related = ["event", "endpoint"]
    inlines = [AttemptInline]
    actions = ["resend"]

    @admin.action(description="Resend the selected deliveries now", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            delivery_resend(delivery=delivery)
            self.log_change(request, delivery, "Resent.")  # the object's history in the admin
        self.message_user(request, f"{queryset.count()} deliveries queued again.", messages.SUCCESS)

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.resend_webhookdelivery")


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnly):
    list_display = ["delivery", "attempted_at", "succeeded", "status_code", "latency_ms", "error"]
    list_filter = ["succeeded"]
    list_select_related = ["delivery__event", "delivery__endpoint"]


@admin.register(Event)
class EventAdmin(ReadOnly):
    list_display = ["public_id", "type", "account", "created_at", "dispatched_at"]
    list_filter = ["type"]
    search_fields = ["public_id", "account__public_id"]
    list_select_related = ["account"]


@admin.register(EmailDelivery)
class EmailDeliveryAdmin(ReadOnly):
    list_display = ["event", "to", "status", "attempts", "next_attempt_at", "sent_at", "error"]
    list_filter = ["status"]
    search_fields = ["to", "event__public_id"]
    list_select_related = ["event"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnly):
    list_display = ["public_id", "url", "description", "event_types", "created_by", "created_at", "deleted_at"]
    exclude = ["secret"]


@admin.register(NotificationPreferences)
class NotificationPreferencesAdmin(ReadOnly):
    list_display = ["account", "low_balance_threshold_credits", "emails_off", "updated_at"]
    search_fields = ["account__public_id"]
    list_select_related = ["account"]


@admin.register(AutoRecharge)
class AutoRechargeAdmin(ReadOnly):
    list_display = ["account", "enabled", "pack", "threshold_credits", "monthly_cap_cents", "state"]
    list_filter = ["enabled", "state"]
    search_fields = ["account__public_id"]
    exclude = ["stripe_payment_method_id"]
    list_select_related = ["account", "pack"]


@admin.register(Recharge)
class RechargeAdmin(ReadOnly):
    list_display = ["public_id", "account", "status", "quantity", "amount_cents", "purchase", "created_at", "error"]
    list_filter = ["status"]
    search_fields = ["public_id", "account__public_id", "purchase__public_id"]
    list_select_related = ["account", "purchase"]

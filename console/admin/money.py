"""Grants, purchases, refunds and Stripe events in the admin: read-only rows, and the actions that
move money (void a grant, refund a purchase, replay an event), each through a console service."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from billing.admin import PublicIdLookup, ReadOnlyAdmin, ReadOnlyInline
from billing.models import Grant, Purchase, PurchaseRefund, StripeEvent
from console.forms import ReasonForm, RefundForm
from console.services import (
    grant_void_audited,
    purchase_refund_audited,
    purchase_refund_resend,
    stripe_event_replay,
)

from .confirm import ActionPage, ActionUrlsMixin, action_view, operator_of


@admin.register(Grant)
class GrantAdmin(ActionUrlsMixin, PublicIdLookup, ReadOnlyAdmin):
    row_id_prefix = "grt_"
    list_display = ["id", "account", "source", "amount", "remaining", "expires_at", "priority", "created_at"]
    list_filter = ["source"]
    search_fields = ["=account__public_id"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    ordering = ["-id"]
    change_form_template = "admin/console/grant_change_form.html"
    actions_pages = {"void": "void_view"}  # noqa: RUF012

    def void_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        grant: Grant = self._found(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            voided = grant_void_audited(
                operator=operator_of(request), grant=grant, reason=data["reason"], confirmation=confirmation
            )
            return f"Voided {voided} credits of grant {grant.pk}."

        page = ActionPage(
            title=f"Void grant {grant.pk}",
            permission="console.void_grant",
            target=grant,
            done_url=reverse("admin:accounts_account_change", args=[grant.account.public_id]),
            perform=perform,
            summary=lambda d: [
                ("Account", grant.account.public_id),
                ("Grant", f"{grant.pk}: {grant.source}, {grant.remaining} of {grant.amount} left"),
                ("Reason", d["reason"]),
            ],
            warning=(
                "Every unspent credit of this lot is cancelled; held credits stay held, and whatever comes back"
                " to the lot later (a hold released, a debit refunded) is cancelled too."
            ),
        )
        return action_view(self, request, page, ReasonForm(request.POST or None))


class PurchaseRefundInline(ReadOnlyInline):
    model = PurchaseRefund
    fields = readonly_fields = (
        "public_id",
        "amount_cents",
        "status",
        "stripe_refund_id",
        "requested_by",
        "reason",
        "error",
    )


@admin.register(Purchase)
class PurchaseAdmin(ActionUrlsMixin, PublicIdLookup, ReadOnlyAdmin):
    list_display = [
        "public_id",
        "account",
        "status",
        "credits",
        "amount_cents",
        "refunded_cents",
        "clawed_back_credits",
        "unrecoverable_credits",
        "flagged_for_review",
        "paid_at",
        "created_at",
    ]
    list_filter = ["status", "flagged_for_review", "flow"]
    search_fields = [
        "=public_id",
        "=account__public_id",
        "=account__user__email",
        "=stripe_checkout_session_id",
        "=stripe_payment_intent_id",
        "=stripe_charge_id",
    ]
    list_select_related = ["account"]
    raw_id_fields = ["account", "grant"]
    ordering = ["-id"]
    inlines = [PurchaseRefundInline]
    change_form_template = "admin/console/purchase_change_form.html"
    actions_pages = {"refund": "refund_view"}  # noqa: RUF012

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        purchase: Purchase = self._found(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            refund = purchase_refund_audited(
                operator=operator_of(request),
                purchase=purchase,
                amount_cents=data["amount_cents"],
                reason=data["reason"],
                confirmation=confirmation,
            )
            purchase.refresh_from_db()
            return (
                f"Refund {refund.public_id} {refund.status} for {refund.amount_cents} cents; clawed back "
                f"{purchase.clawed_back_credits} credits in all, {purchase.unrecoverable_credits} already spent."
            )

        page = ActionPage(
            title=f"Refund {purchase.public_id}",
            permission="console.refund_purchase",
            target=purchase,
            done_url=reverse("admin:billing_purchase_change", args=[purchase.public_id]),
            perform=perform,
            summary=lambda d: [
                ("Purchase", f"{purchase.public_id}: {purchase.credits} credits for {purchase.amount_cents} cents"),
                ("Already refunded", f"{purchase.refunded_cents} cents"),
                ("Refund", f"{d['amount_cents']} cents" if d["amount_cents"] else "all that is left"),
                ("Reason", d["reason"]),
            ],
            warning="Stripe is asked to refund the money; the unspent share of the credits is clawed back.",
        )
        return action_view(self, request, page, RefundForm(request.POST or None))


@admin.register(PurchaseRefund)
class PurchaseRefundAdmin(ActionUrlsMixin, PublicIdLookup, ReadOnlyAdmin):
    list_display = ["public_id", "purchase", "amount_cents", "status", "stripe_refund_id", "requested_by", "created_at"]
    list_filter = ["status"]
    search_fields = ["=public_id", "=purchase__public_id", "=stripe_refund_id"]
    raw_id_fields = ["purchase"]
    change_form_template = "admin/console/purchaserefund_change_form.html"
    actions_pages = {"send": "send_view"}  # noqa: RUF012

    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        refund: PurchaseRefund = self._found(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            if refund.status != PurchaseRefund.Status.REQUESTED:
                return f"Refund {refund.public_id} is {refund.status}: nothing to send."
            sent = purchase_refund_resend(
                operator=operator_of(request), refund=refund, reason=data["reason"], confirmation=confirmation
            )
            return f"Refund {sent.public_id}: {sent.status}."

        page = ActionPage(
            title=f"Send refund {refund.public_id} to Stripe again",
            permission="console.refund_purchase",
            target=refund,
            done_url=reverse("admin:billing_purchaserefund_change", args=[refund.public_id]),
            perform=perform,
            summary=lambda d: [
                ("Refund", f"{refund.public_id}: {refund.amount_cents} cents of {refund.purchase.public_id}"),
                ("Status now", refund.status),
                ("Reason", d["reason"]),
            ],
            warning="Sent with the same idempotency key as before: Stripe refunds it at most once.",
        )
        return action_view(self, request, page, ReasonForm(request.POST or None))


@admin.register(StripeEvent)
class StripeEventAdmin(ActionUrlsMixin, ReadOnlyAdmin):
    list_display = ["stripe_event_id", "type", "status", "purchase", "received_at", "processed_at", "attempts"]
    list_filter = ["status", "type"]
    search_fields = ["=stripe_event_id", "=purchase__public_id"]
    raw_id_fields = ["purchase"]
    ordering = ["-id"]
    change_form_template = "admin/console/stripeevent_change_form.html"
    actions_pages = {"replay": "replay_view"}  # noqa: RUF012

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        if object_id.startswith("evt_"):
            return self.get_queryset(request).filter(stripe_event_id=object_id).first()
        return super().get_object(request, object_id, from_field)

    def replay_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        event: StripeEvent = self._found(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            status = stripe_event_replay(
                operator=operator_of(request), event=event, reason=data["reason"], confirmation=confirmation
            )
            return f"Event {event.stripe_event_id}: {status}."

        page = ActionPage(
            title=f"Process event {event.stripe_event_id} again",
            permission="console.replay_stripe_event",
            target=event,
            done_url=reverse("admin:billing_stripeevent_change", args=[event.pk]),
            perform=perform,
            summary=lambda d: [
                ("Event", f"{event.type} {event.stripe_event_id}"),
                ("Status now", event.status),
                ("Reason", d["reason"]),
            ],
            warning="" if event.status in ("failed", "received") else "This event is not failed: nothing will happen.",
        )
        return action_view(self, request, page, ReasonForm(request.POST or None))

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .errors import BillingError
from .models import (
    ActorType,
    BillingPolicy,
    CreditPack,
    Debit,
    Grant,
    Hold,
    IdempotencyKey,
    JobChunk,
    JobRun,
    LedgerEntry,
    Operation,
    Purchase,
    PurchaseRefund,
    StripeCustomer,
    StripeEvent,
)
from .services.ledger import Actor
from .services.purchases import purchase_refund_execute, purchase_refund_request
from .services.stripe_events import stripe_event_process


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money records are written only by the ledger service: nobody edits them here,
    superusers included (the database refuses ledger rewrites as well)."""

    show_full_result_count = False

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows shown under their parent for reading only."""

    extra = 0
    max_num = 0
    can_delete = False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["code", "credits", "active", "description"]
    list_editable = ["credits", "active"]

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # deactivate instead: old debits name the operation


@admin.register(Grant)
class GrantAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "source", "amount", "remaining", "expires_at", "priority", "created_at"]
    list_filter = ["source"]
    search_fields = ["account__public_id", "account__user__email"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "account",
        "kind",
        "credits",
        "held_credits",
        "balance_after",
        "actor_type",
        "reference",
        "created_at",
    ]
    list_filter = ["kind", "actor_type"]
    search_fields = ["account__public_id", "reference"]
    list_select_related = ["account"]
    raw_id_fields = ["account", "grant", "hold", "debit"]


@admin.register(Debit)
class DebitAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "account", "credits", "operation", "reference", "created_at", "refunded_at"]
    search_fields = ["public_id", "account__public_id", "reference"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "account", "credits", "captured_credits", "status", "expires_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["public_id", "account__public_id", "reference"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["scope", "key", "status_code", "created_at"]
    search_fields = ["key"]


@admin.register(BillingPolicy)
class BillingPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "latest_anchor_day", "updated_at"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return not BillingPolicy.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class JobChunkInline(ReadOnlyInline):
    model = JobChunk
    fields = readonly_fields = (
        "first_account_id",
        "last_account_id",
        "status",
        "rows_done",
        "credits_moved",
        "finished_at",
        "failures",
        "last_error",
    )


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "job",
        "status",
        "as_of",
        "started_at",
        "duration",
        "chunks_done",
        "chunks_total",
        "rows_done",
        "credits_moved",
    ]
    list_filter = ["job", "status"]
    inlines = [JobChunkInline]


@admin.register(JobChunk)
class JobChunkAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "run",
        "first_account_id",
        "last_account_id",
        "status",
        "rows_done",
        "credits_moved",
        "finished_at",
    ]
    list_filter = ["status"]


# --- Packs, purchases and Stripe (issue 4) ---------------------------------------------------


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "credits", "price_cents", "currency", "active"]
    list_editable = ["active"]

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # deactivate instead: purchases name the pack


def may_move_money(request: HttpRequest) -> bool:
    """Refunds and event reprocessing move credits: superusers, or staff who may change purchases."""
    return bool(request.user.is_superuser or request.user.has_perm("billing.change_purchase"))  # type: ignore[union-attr]


def _staff_actor(request: HttpRequest) -> Actor:
    return Actor(ActorType.STAFF, str(request.user.pk))


class PurchaseRefundInline(ReadOnlyInline):
    model = PurchaseRefund
    fields = readonly_fields = ("public_id", "amount_cents", "status", "stripe_refund_id", "requested_by", "error")


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
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
        "public_id",
        "account__public_id",
        "account__user__email",
        "stripe_checkout_session_id",
        "stripe_payment_intent_id",
        "stripe_charge_id",
    ]
    list_select_related = ["account"]
    raw_id_fields = ["account", "grant"]
    inlines = [PurchaseRefundInline]
    actions = ["refund_in_full"]

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return may_move_money(request)

    @admin.action(description="Refund selected purchases in full through Stripe", permissions=["refund"])
    def refund_in_full(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        # Not in a transaction (the admin's changelist is not atomic): each refund is recorded
        # and committed, Stripe is called, and the answer recorded, one purchase at a time.
        for purchase in queryset.order_by("id"):
            try:
                refund = purchase_refund_request(purchase=purchase, requested_by=str(request.user), reason="admin")
                refund = purchase_refund_execute(refund=refund, actor=_staff_actor(request))
            except BillingError as exc:
                self.message_user(request, f"Purchase {purchase.public_id}: {exc.message}", messages.ERROR)
                continue
            purchase.refresh_from_db()
            self.message_user(
                request,
                f"Purchase {purchase.public_id}: refund {refund.public_id} {refund.status} "
                f"for {refund.amount_cents} cents; clawed back {purchase.clawed_back_credits} credits, "
                f"{purchase.unrecoverable_credits} already spent",
                messages.SUCCESS,
            )


@admin.register(PurchaseRefund)
class PurchaseRefundAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "purchase", "amount_cents", "status", "stripe_refund_id", "requested_by", "created_at"]
    list_filter = ["status"]
    search_fields = ["public_id", "purchase__public_id", "stripe_refund_id"]
    raw_id_fields = ["purchase"]
    actions = ["send_again"]

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return may_move_money(request)

    @admin.action(description="Send requested refunds to Stripe again (same idempotency key)", permissions=["refund"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[PurchaseRefund]) -> None:
        for refund in queryset.filter(status=PurchaseRefund.Status.REQUESTED).select_related("purchase__account"):
            try:
                refund = purchase_refund_execute(refund=refund, actor=_staff_actor(request))
            except BillingError as exc:
                self.message_user(request, f"Refund {refund.public_id}: {exc.message}", messages.ERROR)
                continue
            self.message_user(request, f"Refund {refund.public_id}: {refund.status}", messages.SUCCESS)


@admin.register(StripeCustomer)
class StripeCustomerAdmin(ReadOnlyAdmin):
    list_display = ["stripe_customer_id", "account", "created_at"]
    search_fields = ["stripe_customer_id", "account__public_id", "account__user__email"]
    raw_id_fields = ["account"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["stripe_event_id", "type", "status", "purchase", "received_at", "processed_at", "attempts"]
    list_filter = ["status", "type"]
    search_fields = ["stripe_event_id", "purchase__public_id"]
    raw_id_fields = ["purchase"]
    actions = ["process_again"]

    def has_process_permission(self, request: HttpRequest) -> bool:
        return may_move_money(request)

    @admin.action(description="Process failed events again", permissions=["process"])
    def process_again(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        for event in queryset.filter(status__in=[StripeEvent.Status.FAILED, StripeEvent.Status.RECEIVED]):
            status = stripe_event_process(event_pk=event.pk)
            self.message_user(request, f"Event {event.stripe_event_id}: {status}")

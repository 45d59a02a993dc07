"""The admin of billing's records. Money records are read-only here for everyone; the actions
that move credits (grant, clawback, void, refund, event replay) are the operator console's
(console/admin/), with a confirmation, a reason and an audit record each."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Model
from django.http import HttpRequest
from django.utils.functional import cached_property

from accounts.ids import row_id_of

from .models import (
    BillingPolicy,
    CreditPack,
    Debit,
    Hold,
    IdempotencyKey,
    JobChunk,
    JobRun,
    LedgerEntry,
    Operation,
    StripeCustomer,
)
from .quotas import quota_policy_forget

# A changelist counts its rows up to this many: enough for its page links, never a count of a
# whole large table (a million ledger entries) per page.
COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows (`SELECT count(*) FROM (... LIMIT n)`)."""

    @cached_property
    def count(self) -> int:
        return self.object_list[: COUNT_CAP + 1].count()  # type: ignore[attr-defined,index]


class PublicIdLookup:
    """Admin pages open by public id too: /admin/billing/purchase/pur_.../change/, and for rows
    whose public id is their permuted row id (`row_id_prefix`), /admin/billing/grant/grt_.../change/."""

    row_id_prefix = ""

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Model | None:
        model = self.model  # type: ignore[attr-defined]
        queryset = self.get_queryset(request)  # type: ignore[attr-defined]
        # The admin unquotes the id in the path ("_4F" reads as "O"), which a public id's random
        # part may contain: the id as the path has it is a candidate too.
        raw = (request.resolver_match.kwargs.get("object_id") if request.resolver_match else None) or object_id
        candidates = list(dict.fromkeys([object_id, raw]))
        if any("\x00" in candidate for candidate in candidates):  # no id has one, and PostgreSQL refuses it
            return None
        # "grt_23..." unquotes as "grt#...": either candidate may be the row's public id.
        row_ids = [row_id_of(self.row_id_prefix, c) for c in candidates] if self.row_id_prefix else []
        if row_ids := [row_id for row_id in row_ids if row_id is not None]:
            return queryset.filter(pk__in=row_ids).first()
        if not object_id.isdigit() and any(f.name == "public_id" for f in model._meta.fields):
            return queryset.filter(public_id__in=candidates).first()
        return super().get_object(request, object_id, from_field)  # type: ignore[misc]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money records are written only by the ledger service: nobody edits them here,
    superusers included (the database refuses ledger rewrites as well)."""

    show_full_result_count = False
    paginator = CappedCountPaginator

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


@admin.register(LedgerEntry)
class LedgerEntryAdmin(PublicIdLookup, ReadOnlyAdmin):
    row_id_prefix = "le_"
    ordering = ["-id"]
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
    # Exact matches: a substring search would read the whole ledger.
    search_fields = ["=account__public_id", "=reference"]
    list_select_related = ["account"]
    raw_id_fields = ["account", "grant", "hold", "debit"]


@admin.register(Debit)
class DebitAdmin(PublicIdLookup, ReadOnlyAdmin):
    list_display = ["public_id", "account", "credits", "operation", "reference", "created_at", "refunded_at"]
    search_fields = ["=public_id", "=account__public_id", "=reference"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]


@admin.register(Hold)
class HoldAdmin(PublicIdLookup, ReadOnlyAdmin):
    list_display = ["public_id", "account", "credits", "captured_credits", "status", "expires_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["=public_id", "=account__public_id", "=reference"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["scope", "key", "status_code", "created_at"]
    search_fields = ["key"]


@admin.register(BillingPolicy)
class BillingPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "latest_anchor_day", "rate_limit_per_minute", "daily_cap_credits", "updated_at"]

    def save_model(self, request, obj, form, change) -> None:  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        quota_policy_forget()  # this process at once; the others within quotas.POLICY_SECONDS

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        # The row is made at the first signup or refill; until then a holder of
        # billing.add_billingpolicy (finance) may make it. Never a second one.
        return super().has_add_permission(request) and not BillingPolicy.objects.exists()

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


# --- Packs and Stripe customers ---------------------------------------------------------------


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "credits", "price_cents", "currency", "active"]
    list_editable = ["active"]

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # deactivate instead: purchases name the pack


@admin.register(StripeCustomer)
class StripeCustomerAdmin(ReadOnlyAdmin):
    list_display = ["stripe_customer_id", "account", "created_at"]
    search_fields = ["stripe_customer_id", "account__public_id", "account__user__email"]
    raw_id_fields = ["account"]

from __future__ import annotations

from django.contrib import admin

from .models import BillingPolicy, Debit, Grant, Hold, IdempotencyKey, JobChunk, JobRun, LedgerEntry, Operation


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


class JobChunkInline(admin.TabularInline):
    model = JobChunk
    fields = readonly_fields = (
        "first_account_id",
        "last_account_id",
        "status",
        "rows_done",
        "credits_moved",
        "finished_at",
    )
    extra = 0
    max_num = 0
    can_delete = False


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

"""The overview page (the rollup's changelist, linked from the admin index) and the read-only
audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from billing.admin import CappedCountPaginator, ReadOnlyAdmin
from billing.money import format_price
from console.chart import day_chart
from console.models import AuditRecord, DailyRollup, RollupState
from console.selectors import DAY_FIGURES, overview_get

# Packs are sold in US dollars (the seeded pack, the catalogue's default currency): the
# liability, summed over every purchase, is shown in them.
LIABILITY_CURRENCY = "usd"


@admin.register(DailyRollup)
class OverviewAdmin(ReadOnlyAdmin):
    """Credits granted, spent, expired and clawed back, and revenue, per day for 30 days, and the
    outstanding liability: read from the daily rollup, a row per day (console/rollup.py)."""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        overview = overview_get()
        rows = [{"day": row.day, "values": [getattr(row, name) for name, _ in DAY_FIGURES]} for row in overview.days]
        context = {
            **self.admin_site.each_context(request),
            "title": "Overview: the last 30 days",
            "opts": self.model._meta,
            "overview": overview,
            "figures": [label for _, label in DAY_FIGURES],
            "rows": rows,
            "totals": [overview.totals[name] for name, _ in DAY_FIGURES],
            "chart": day_chart(overview.days),
            "liability": format_price(amount_cents=overview.liability_cents, currency=LIABILITY_CURRENCY),
        }
        return TemplateResponse(request, "admin/console/overview.html", context)


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "target", "account", "credits", "amount_cents", "reason"]
    list_filter = ["action", "actor_type"]
    search_fields = ["=account__public_id", "=target", "actor"]
    list_select_related = ["account"]
    ordering = ["-id"]
    paginator = CappedCountPaginator


@admin.register(RollupState)
class RollupStateAdmin(ReadOnlyAdmin):
    """How far the rollup has read the ledger, and its latest mark (console/rollup.py)."""

    list_display = ["rolled_up_to_id", "rolled_up_at", "mark_id", "mark_taken_at"]

"""Reads for the operator console: the overview, and what an account's page shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import BigIntegerField, Exists, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Account
from billing.models import Debit, Grant, Hold, LedgerEntry, Purchase, StripeCustomer, StripeEvent
from billing.selectors import lapsed
from notifications.models import Event

from .models import AuditRecord, DailyRollup, RollupState

OVERVIEW_DAYS = 30
# The figures of a day, in the order the table and the chart show them.
DAY_FIGURES = [
    ("granted_free_credits", "Granted free"),
    ("granted_paid_credits", "Granted paid"),
    ("granted_adjustment_credits", "Granted adjustment"),
    ("spent_credits", "Spent"),
    ("expired_credits", "Expired"),
    ("clawed_back_credits", "Clawed back"),
    ("voided_credits", "Voided"),
    ("revenue_cents", "Revenue (cents)"),
]


@dataclass(frozen=True)
class Overview:
    days: list[DailyRollup]
    liability_credits: int
    liability_cents: int
    state: RollupState | None
    totals: dict[str, int] = field(default_factory=dict)


def overview_get(*, today: date | None = None, days: int = OVERVIEW_DAYS) -> Overview:
    """The last `days` UTC days (today included), a row for each, zeros where nothing moved;
    the outstanding liability is every day's change of unspent paid credits added up (the
    table has a row per day since launch, not per entry)."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    stored = {row.day: row for row in DailyRollup.objects.filter(day__gte=first, day__lte=today)}
    rows = [stored.get(first + timedelta(days=n)) or DailyRollup(day=first + timedelta(days=n)) for n in range(days)]
    liability = DailyRollup.objects.aggregate(credits=Sum("paid_credits_change"), cents=Sum("paid_value_change_cents"))
    cents = (liability["cents"] or Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    totals = {name: sum(getattr(row, name) for row in rows) for name, _ in DAY_FIGURES}
    return Overview(
        days=rows,
        liability_credits=liability["credits"] or 0,
        liability_cents=int(cents),
        state=RollupState.objects.filter(pk=1).first(),
        totals=totals,
    )


PANEL_ROWS = 20


@dataclass(frozen=True)
class AccountPanels:
    """What an account's admin page shows below its fields, each list its newest rows first
    (grants in spend order), at most PANEL_ROWS of each."""

    free_credits: int
    paid_credits: int
    grants: list[Grant]
    entries: list[LedgerEntry]
    holds: list[Hold]
    debits: list[Debit]
    purchases: list[Purchase]
    events: list[StripeEvent]
    audit: list[AuditRecord]
    notifications: list[Event]


def account_panels(*, account: Account, now: datetime | None = None) -> AccountPanels:
    now = now or timezone.now()
    live = Grant.objects.filter(account=account, spendable=True).alias(lapsed=lapsed(now)).filter(lapsed=False)
    grants = list(
        Grant.objects.raw(
            "SELECT g.* FROM billing_spendable_lots(%s, %s) l JOIN billing_grant g ON g.id = l.id ORDER BY l.place",
            [account.pk, now],
        )[:PANEL_ROWS]
    )
    paid = live.filter(source=Grant.Source.PURCHASE).aggregate(s=Sum("remaining"))["s"] or 0
    free = live.exclude(source=Grant.Source.PURCHASE).aggregate(s=Sum("remaining"))["s"] or 0
    purchases = list(
        Purchase.objects.filter(account=account).prefetch_related("refunds").order_by("-created_at", "-id")[:PANEL_ROWS]
    )
    return AccountPanels(
        free_credits=free,
        paid_credits=paid,
        grants=grants,
        entries=list(LedgerEntry.objects.filter(account=account).order_by("-id")[:PANEL_ROWS]),
        holds=list(Hold.objects.filter(account=account).order_by("-id")[:PANEL_ROWS]),
        debits=list(Debit.objects.filter(account=account).order_by("-id")[:PANEL_ROWS]),
        purchases=purchases,
        events=list(StripeEvent.objects.filter(purchase__account=account).order_by("-id")[:PANEL_ROWS]),
        audit=list(AuditRecord.objects.filter(account=account).order_by("-id")[:PANEL_ROWS]),
        notifications=list(Event.objects.filter(account=account).select_related("email").order_by("-id")[:PANEL_ROWS]),
    )


def _live_lots(now: datetime) -> Any:
    return Grant.objects.filter(account=OuterRef("pk"), spendable=True).alias(lapsed=lapsed(now)).filter(lapsed=False)


def _sum_of(lots: Any) -> Coalesce:
    total = lots.order_by().values("account").annotate(total=Sum("remaining")).values("total")
    return Coalesce(Subquery(total), Value(0), output_field=BigIntegerField())


def accounts_with_credit_split(queryset: QuerySet[Account], now: datetime | None = None) -> QuerySet[Account]:
    """Each account with `free_credits` and `paid_credits`: what its unexpired lots hold (one
    index lookup of its spendable lots each, for the rows of the page only)."""
    lots = _live_lots(now or timezone.now())
    return queryset.annotate(
        free_credits=_sum_of(lots.exclude(source=Grant.Source.PURCHASE)),
        paid_credits=_sum_of(lots.filter(source=Grant.Source.PURCHASE)),
    )


def accounts_with_paid_credits(queryset: QuerySet[Account], now: datetime | None = None) -> QuerySet[Account]:
    return queryset.filter(Exists(_live_lots(now or timezone.now()).filter(source=Grant.Source.PURCHASE)))


def accounts_matching(queryset: QuerySet[Account], term: str) -> QuerySet[Account]:
    """An account by its id, its purchase's id, its Stripe customer id or its user's email (a
    whole one exactly, a part of one otherwise)."""
    term = term.strip()
    if term.startswith("acct_"):
        return queryset.filter(public_id=term)
    if term.startswith("pur_"):
        return queryset.filter(pk__in=Purchase.objects.filter(public_id=term).values("account_id"))
    if term.startswith("cus_"):
        return queryset.filter(pk__in=StripeCustomer.objects.filter(stripe_customer_id=term).values("account_id"))
    if "@" in term and " " not in term:
        return queryset.filter(user__email=term.lower())
    return queryset.filter(user__email__icontains=term)

"""Reads of balances, holds and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.models import Account
from billing.models import CreditPack, Grant, Hold, LedgerEntry, Operation, Purchase


@dataclass(frozen=True)
class Balance:
    account: Account
    available: int
    held: int
    free: int
    paid: int
    grants: list[Grant]


def spendable_grants(account: Account, now: datetime) -> QuerySet[Grant]:
    """Unexpired lots with credits left, in spend order. A lot is expired from the exact second."""
    return (
        Grant.objects.filter(account=account, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_last=True), "priority", "created_at", "id")
    )


def has_lapsed_holds(account: Account, now: datetime) -> bool:
    """Whether the account has pending holds past expiry that no sweep has released yet."""
    return account.held_credits > 0 and (
        Hold.objects.filter(account=account, status=Hold.Status.PENDING, expires_at__lte=now).exists()
    )


def balance_get(*, account: Account, now: datetime | None = None) -> Balance:
    now = now or timezone.now()
    grants = list(spendable_grants(account, now).only("id", "source", "remaining", "expires_at"))
    paid = sum(g.remaining for g in grants if g.source == Grant.Source.PURCHASE)
    free = sum(g.remaining for g in grants if g.source != Grant.Source.PURCHASE)
    return Balance(
        account=account, available=free + paid, held=account.held_credits, free=free, paid=paid, grants=grants
    )


def operation_price(code: str) -> int | None:
    return Operation.objects.filter(code=code, active=True).values_list("credits", flat=True).first()


def ledger_page(*, account: Account, before_id: int | None, limit: int) -> tuple[list[LedgerEntry], int | None]:
    """Newest first. Returns the page and the id to continue below, or None at the end."""
    entries = LedgerEntry.objects.filter(account=account).select_related("hold", "debit").order_by("-id")
    if before_id is not None:
        entries = entries.filter(id__lt=before_id)
    page = list(entries[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].id if more and page else None)


def packs_active() -> QuerySet[CreditPack]:
    return CreditPack.objects.filter(active=True).order_by("price_cents", "id")


def purchases_of(*, account: Account, limit: int = 100) -> list[Purchase]:
    """The account's purchases, newest first."""
    return list(Purchase.objects.filter(account=account).select_related("pack").order_by("-created_at", "-id")[:limit])

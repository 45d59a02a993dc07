"""Reads of balances, holds and the ledger."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import BooleanField, F, Func, QuerySet, Value
from django.utils import timezone

from accounts.ids import row_id_keys
from accounts.models import Account
from billing.models import CreditPack, Grant, LedgerEntry, Purchase


def lapsed(at: datetime) -> Func:
    """The expiry rule (billing_expired) for a queryset's `expires_at` at `at`: filter on it with
    .alias(lapsed=lapsed(now)).filter(lapsed=True) (or False)."""
    return Func(F("expires_at"), Value(at), function="billing_expired", output_field=BooleanField())


@dataclass(frozen=True)
class Balance:
    account: Account
    available: int
    held: int
    free: int
    paid: int
    grants: list[Grant]


def spendable_grants(account: Account, now: datetime) -> list[Grant]:
    """Unexpired lots with credits left, in spend order (billing_spendable_lots)."""
    return list(
        Grant.objects.raw(
            "SELECT l.id, l.source, l.remaining, l.expires_at FROM billing_spendable_lots(%s, %s) l ORDER BY l.place",
            [account.pk, now],
        )
    )


def balance_get(*, account: Account, now: datetime | None = None) -> Balance:
    now = now or timezone.now()
    return _balance_from(account, spendable_grants(account, now))


def _balance_from(account: Account, grants: list[Grant]) -> Balance:
    paid = sum(g.remaining for g in grants if g.source == Grant.Source.PURCHASE)
    free = sum(g.remaining for g in grants if g.source != Grant.Source.PURCHASE)
    return Balance(
        account=account, available=free + paid, held=account.held_credits, free=free, paid=paid, grants=grants
    )


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


# The balance route's body, rendered by PostgreSQL (the one place the API's balance shape is
# written; BalanceOut only describes it), or NULL when the account is unknown or has something to
# settle first: a pending hold past its expiry, or the current free period's grant not yet made
# (billing_free_due). Times are written by billing_iso(), as DRF's DateTimeField writes them.
# What PostgreSQL spends is per execution, mostly in setting up the plan's nodes and expressions:
# the lapsed-hold check is a function call (billing_lapsed_hold), which costs nothing for an
# account with no held credits, where a subquery's node would be set up on every read, and each
# JSON object is one format() call rather than a chain of concatenations.
_BALANCE_JSON = """
SELECT CASE
    WHEN a.held_credits > 0 AND billing_lapsed_hold(a.id, %(now)s) THEN NULL
    WHEN billing_free_due(a.status, a.free_period_start, a.first_period_start, a.period_anchor_day, %(now)s)
    THEN NULL
    ELSE format('{"account":%%s,"status":%%s,"available":%%s,"held":%%s,"free":%%s,"paid":%%s,"grants":[%%s]}',
                to_json(a.public_id), to_json(a.status), l.free + l.paid, a.held_credits, l.free, l.paid, l.grants)
END
FROM accounts_account a
CROSS JOIN LATERAL (
    SELECT coalesce(sum(g.remaining) FILTER (WHERE g.source <> 'purchase'), 0) AS free,
           coalesce(sum(g.remaining) FILTER (WHERE g.source = 'purchase'), 0) AS paid,
           coalesce(string_agg(
               format('{"id":%%s,"source":%%s,"remaining":%%s,"expires_at":%%s}',
                      to_json(billing_public_id('grt_', g.id, '{id_keys}'::bigint[])), to_json(g.source),
                      g.remaining, coalesce('"' || billing_iso(g.expires_at) || '"', 'null')),
               ',' ORDER BY g.place), '') AS grants
    FROM billing_spendable_lots(a.id, %(now)s) g
) l
WHERE a.public_id = %(account)s
"""


def hold_json(public_id: str) -> dict[str, Any]:
    """A hold as the API shows it (billing_hold_json)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT billing_hold_json(h, a.public_id) FROM billing_hold h "
            "JOIN accounts_account a ON a.id = h.account_id WHERE h.public_id = %s",
            [public_id],
        )
        (body,) = cursor.fetchone()
    return json.loads(body) if isinstance(body, str) else body


@functools.cache
def _balance_query(id_keys: tuple[int, ...]) -> str:
    """_BALANCE_JSON with the grant ids' keys written in (integers): one statement text per
    deployment, and no array parameter to adapt on every read (about 6% of a balance read's Python work)."""
    return _BALANCE_JSON.replace("{id_keys}", "{" + ",".join(str(int(k)) for k in id_keys) + "}")


def balance_json(public_id: str, now: datetime) -> str | None:
    """The balance route's body as PostgreSQL renders it; None when the account is unknown or
    has something to settle first."""
    with connection.cursor() as cursor:
        cursor.execute(_balance_query(row_id_keys("grt_")), {"account": public_id, "now": now})
        row = cursor.fetchone()
    return None if row is None else row[0]

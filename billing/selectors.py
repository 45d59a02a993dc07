"""Reads of balances, holds and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.models import Account
from billing.models import CreditPack, Grant, Hold, LedgerEntry, Operation, Purchase
from billing.periods import month_bounds


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
        Grant.objects.filter(account=account, spendable=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_last=True), "priority", "created_at", "id")
    )


# SPEND_ORDER (billing.services.ledger) in SQL, for lots read as `g`: earliest expiry first,
# never-expiring last, then lower priority, then oldest.
SPEND_ORDER_SQL = "g.expires_at ASC NULLS LAST, g.priority, g.created_at, g.id"


def has_lapsed_holds(account: Account, now: datetime) -> bool:
    """Whether the account has pending holds past expiry that no sweep has released yet."""
    return account.held_credits > 0 and (
        Hold.objects.filter(account=account, status=Hold.Status.PENDING, expires_at__lte=now).exists()
    )


def balance_get(*, account: Account, now: datetime | None = None) -> Balance:
    now = now or timezone.now()
    grants = list(spendable_grants(account, now).only(*_GRANT_FIELDS))
    return _balance_from(account, grants)


def _balance_from(account: Account, grants: list[Grant]) -> Balance:
    paid = sum(g.remaining for g in grants if g.source == Grant.Source.PURCHASE)
    free = sum(g.remaining for g in grants if g.source != Grant.Source.PURCHASE)
    return Balance(
        account=account, available=free + paid, held=account.held_credits, free=free, paid=paid, grants=grants
    )


_ACCOUNT_COLUMNS = [f.column for f in Account._meta.concrete_fields]
_GRANT_FIELDS = ["id", "source", "remaining", "expires_at"]


def balance_by_public_id(public_id: str, now: datetime) -> tuple[Balance, bool] | None:
    """An account's balance in one statement (one snapshot), and whether it has lapsed holds.

    None for an unknown account. The lots are read exactly as balance_get reads them; a caller
    that finds the account needs settling (lapsed holds, a free grant due) settles it and reads
    again with balance_get.
    """
    if connection.vendor != "postgresql":
        # The embedded SQLite returns dates as text that only the ORM converts: two queries there.
        found = Account.objects.filter(public_id=public_id).first()
        if found is None:
            return None
        return balance_get(account=found, now=now), has_lapsed_holds(found, now)
    account_table, grant_table, hold_table = (
        Account._meta.db_table,
        Grant._meta.db_table,
        Hold._meta.db_table,
    )
    columns = ", ".join(f"a.{column}" for column in _ACCOUNT_COLUMNS)
    statement = (
        f"SELECT {columns}, "
        f"CASE WHEN a.held_credits > 0 THEN EXISTS (SELECT 1 FROM {hold_table} h WHERE h.account_id = a.id "
        "AND h.status = %s AND h.expires_at <= %s) ELSE false END, "
        f"g.id, g.source, g.remaining, g.expires_at "
        f"FROM {account_table} a LEFT JOIN {grant_table} g ON g.account_id = a.id AND g.spendable "
        "AND (g.expires_at IS NULL OR g.expires_at > %s) "
        f"WHERE a.public_id = %s ORDER BY {SPEND_ORDER_SQL}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [Hold.Status.PENDING, now, now, public_id])
        rows = cursor.fetchall()
    if not rows:
        return None
    width = len(_ACCOUNT_COLUMNS)
    # psycopg returns every account column as its Python type (none of them needs a converter).
    account = Account.from_db("default", [f.attname for f in Account._meta.concrete_fields], list(rows[0][:width]))
    lapsed = bool(rows[0][width])
    grants = [Grant.from_db("default", _GRANT_FIELDS, list(row[width + 1 :])) for row in rows if row[width + 1]]
    return _balance_from(account, grants), lapsed


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


# Whether account `a`'s current free period has no grant yet: billing.periods.period_at's period
# at now, decided from the calendar bounds of now's UTC month (billing.periods.month_bounds, whose
# `params` the statement takes): the anchor day's midnight this month if that day is not after
# today, else last month's, or the first period's start if that falls in a later month (a clock
# moved back). An expression over the account row alone, so a statement that locks the row can use
# it, and comparisons only: date arithmetic per row would cost several times more.
FREE_GRANT_DUE_SQL = """(a.free_period_start IS NULL OR a.free_period_start < CASE
      WHEN a.period_anchor_day <= %(day)s
      THEN CASE WHEN a.first_period_start >= %(next_month)s::timestamp AT TIME ZONE 'UTC' THEN a.first_period_start
                ELSE (%(this_month)s::date + (a.period_anchor_day - 1))::timestamp AT TIME ZONE 'UTC' END
      ELSE CASE WHEN a.first_period_start >= %(this_month)s::timestamp AT TIME ZONE 'UTC' THEN a.first_period_start
                ELSE (%(previous_month)s::date + (a.period_anchor_day - 1))::timestamp AT TIME ZONE 'UTC' END
    END)"""

# The balance body (billing.serializers.balance_data, rendered as the API renders JSON) built by
# PostgreSQL, or NULL when the account has something to settle first: a pending hold past its
# expiry, or, when active, the current free period's grant not yet made (FREE_GRANT_DUE_SQL:
# deciding it here saves loading the account's dates into Python). Times are written by
# billing_iso(), as DRF's DateTimeField writes them. The service key with hash %(key)s, if one is
# unrevoked, comes with it: the one row is there whether or not the account or the key exists.
# What PostgreSQL spends is per execution, mostly in setting up the plan's nodes and expressions:
# the lapsed-hold check is a function call (billing_lapsed_hold, migration billing 0011), which
# costs nothing for an account with no held credits, where a subquery's node would be set up on
# every read, and each JSON object is one format() call rather than a chain of concatenations.
_BALANCE_JSON = (
    """
SELECT k.id, k.name, b.body
FROM (SELECT 1) one
LEFT JOIN accounts_servicekey k ON k.key_hash = %(key)s AND k.revoked_at IS NULL
LEFT JOIN LATERAL (
  SELECT CASE
    WHEN a.held_credits > 0 AND billing_lapsed_hold(a.id, %(now)s) THEN NULL
    WHEN a.status = 'active' AND """
    + FREE_GRANT_DUE_SQL
    + """
    THEN NULL
    ELSE format('{"account":%%s,"status":%%s,"available":%%s,"held":%%s,"free":%%s,"paid":%%s,"grants":[%%s]}',
                to_json(a.public_id), to_json(a.status), l.free + l.paid, a.held_credits, l.free, l.paid, l.grants)
  END AS body
  FROM accounts_account a
  CROSS JOIN LATERAL (
    SELECT coalesce(sum(g.remaining) FILTER (WHERE g.source <> 'purchase'), 0) AS free,
           coalesce(sum(g.remaining) FILTER (WHERE g.source = 'purchase'), 0) AS paid,
           coalesce(string_agg(
               format('{"id":%%s,"source":%%s,"remaining":%%s,"expires_at":%%s}', g.id, to_json(g.source),
                      g.remaining, coalesce('"' || billing_iso(g.expires_at) || '"', 'null')),
               ',' ORDER BY """
    + SPEND_ORDER_SQL
    + """), '') AS grants
    FROM billing_grant g
    WHERE g.account_id = a.id AND g.spendable AND (g.expires_at IS NULL OR g.expires_at > %(now)s)
  ) l
  WHERE a.public_id = %(account)s
) b ON true
"""
)


@dataclass(frozen=True)
class BalanceJson:
    # The unrevoked service key with the hash asked about: (id, name), or None.
    key: tuple[int, str] | None
    # The balance route's body, or None when the account is unknown or has something to settle.
    body: str | None


def balance_json_checked(public_id: str, now: datetime, key_hash: str | None) -> BalanceJson:
    """The balance route's body as PostgreSQL renders it, and the service key with `key_hash`,
    in one statement (PostgreSQL only: the caller checks).

    The hottest read there is: building the body in the database saves the Python objects per
    row and the rendering (tests compare it byte for byte with balance_data rendered as JSON),
    and checking the key in the same statement saves asking Redis for it
    (accounts.authentication.LeasedServiceCall).
    """
    with connection.cursor() as cursor:
        cursor.execute(_BALANCE_JSON, {"account": public_id, "now": now, "key": key_hash, **month_bounds(now).params})
        key_id, key_name, body = cursor.fetchone()
    return BalanceJson(None if key_id is None else (key_id, key_name), body)


def balance_json(public_id: str, now: datetime) -> str | None:
    """The balance route's body as PostgreSQL renders it; None when the account is unknown or
    has something to settle first, or off PostgreSQL."""
    if connection.vendor != "postgresql":
        return None
    return balance_json_checked(public_id, now, None).body

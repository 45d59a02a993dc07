"""The billing page's history in the user's words: "Generation", "Generation: reserved",
"Generation: 3 reserved credits used", "Generation: returned", not the ledger's `hold -10` or
`capture 0`. One row per movement: a movement that touched several lots wrote one entry per lot.
Also the one rule of what an entry's reference shows outside the console (shown_reference), for
the page and the API's ledger alike."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from billing.models import ActorType, Grant, LedgerEntry

SOURCE_LABELS: dict[str, str] = {
    Grant.Source.FREE_MONTHLY: "Free monthly credits",
    Grant.Source.PURCHASE: "Purchased credits",
    Grant.Source.ADJUSTMENT: "Credits added by support",
    Grant.Source.PROMO: "Promotion",
}


@dataclass(frozen=True)
class HistoryRow:
    created_at: datetime
    what: str
    # The change to the credits the user can spend; None when the movement changed none (a
    # capture charges credits that were already reserved).
    change: int | None
    balance_after: int
    reference: str


def _spend_name(entry: LedgerEntry) -> str:
    """What the credits went on: the operation ("Generation"), or "Credits" for a bare amount."""
    operation = entry.hold.operation if entry.hold else entry.debit.operation if entry.debit else ""
    return operation.replace("_", " ").replace("-", " ").capitalize() or "Credits"


def _words(entry: LedgerEntry, held: int, source: str) -> str:
    lot = SOURCE_LABELS.get(source, "Credits")
    words: dict[str, str] = {
        LedgerEntry.Kind.GRANT: lot,
        LedgerEntry.Kind.DEBIT: _spend_name(entry),
        LedgerEntry.Kind.HOLD: f"{_spend_name(entry)}: reserved",
        LedgerEntry.Kind.CAPTURE: f"{_spend_name(entry)}: {-held} reserved credit{'' if -held == 1 else 's'} used",
        LedgerEntry.Kind.RELEASE: f"{_spend_name(entry)}: returned",
        LedgerEntry.Kind.REFUND: f"{_spend_name(entry)}: refunded",
        LedgerEntry.Kind.EXPIRE: f"{lot} expired",
        # Purchased credits go back with the money; any other lot's only when support takes them.
        LedgerEntry.Kind.CLAWBACK: "Taken back: the payment was refunded"
        if source == Grant.Source.PURCHASE
        else "Taken back by support",
        LedgerEntry.Kind.VOID: "Removed by support",
        LedgerEntry.Kind.ADJUST: "Adjusted by support",
    }
    return words.get(entry.kind, entry.get_kind_display())


# Kinds whose movement is about one lot (a grant, its expiry, ...): their rows stay one per lot.
_LOT_KINDS = {
    LedgerEntry.Kind.GRANT,
    LedgerEntry.Kind.EXPIRE,
    LedgerEntry.Kind.CLAWBACK,
    LedgerEntry.Kind.VOID,
    LedgerEntry.Kind.ADJUST,
}


# A purchase's id, the reference of the clawback its refund makes (whoever started the refund).
_PURCHASE_ID = re.compile(r"pur_[A-Za-z0-9]{1,40}")


def shown_reference(entry: LedgerEntry) -> str:
    """An entry's reference as the API and the billing page show it: the generation service's
    (the user's own job) or a refunded purchase's id. What staff write on their movements (their
    login, in the console's grants, and their reasons, in clawbacks and voids) is for operators
    and stays in the admin."""
    if entry.actor_type == ActorType.STAFF and not _PURCHASE_ID.fullmatch(entry.reference):
        return ""
    return entry.reference


def _movement(entry: LedgerEntry) -> tuple[object, ...]:
    lot = entry.grant_id if entry.kind in _LOT_KINDS else None
    return (entry.kind, entry.hold_id, entry.debit_id, lot, entry.created_at, entry.reference)


def history_rows(entries: Iterable[LedgerEntry]) -> list[HistoryRow]:
    """Rows for these entries (newest first): the entries of one movement, which share its kind,
    hold or debit, time and reference, become one row with their sum and the balance after it."""
    entries = list(entries)
    sources = dict(Grant.objects.filter(pk__in={e.grant_id for e in entries if e.grant_id}).values_list("pk", "source"))
    groups: list[list[LedgerEntry]] = []
    for entry in entries:
        if groups and _movement(groups[-1][0]) == _movement(entry):
            groups[-1].append(entry)
        else:
            groups.append([entry])
    rows = []
    for group in groups:
        newest = group[0]
        credits = sum(e.credits for e in group)
        held = sum(e.held_credits for e in group)
        rows.append(
            HistoryRow(
                created_at=newest.created_at,
                what=_words(newest, held, sources.get(newest.grant_id, "") if newest.grant_id else ""),
                change=None if newest.kind == LedgerEntry.Kind.CAPTURE and credits == 0 else credits,
                balance_after=newest.balance_after,
                reference=shown_reference(newest),
            )
        )
    return rows

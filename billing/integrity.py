"""The ledger invariants of DESIGN.md, checked set-based so they scale to millions of rows.

Each check is one query returning the rows that break it; an empty result means it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db.models import (
    BooleanField,
    CharField,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Abs, Cast, Coalesce

from accounts.models import Account
from billing.models import Debit, Grant, Hold, IdempotencyKey, LedgerEntry, Purchase
from billing.money import credits_to_claw_back

ZERO = Value(0, output_field=IntegerField())


def _sum_of(queryset: QuerySet, field: str) -> Coalesce:
    summed = (
        queryset.order_by().values(queryset.model._meta.get_field("account").attname).annotate(t=Sum(field)).values("t")
    )
    return Coalesce(Subquery(summed), ZERO)


def _entries_sum(field: str, **filters: object) -> Coalesce:
    rows = LedgerEntry.objects.filter(**filters).order_by().values(*filters.keys()).annotate(t=Sum(field)).values("t")
    return Coalesce(Subquery(rows), ZERO)


@dataclass(frozen=True)
class Breach:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


def _grant_movements(scope: Q) -> Iterator[Breach]:
    moved = _entries_sum("credits", grant=OuterRef("pk"))
    for g in (
        Grant.objects.filter(scope)
        .annotate(moved=moved)
        .exclude(remaining=F("moved"))
        .values("pk", "remaining", "moved")
    ):
        yield Breach(
            "grant_remaining", f"grant {g['pk']}", f"remaining {g['remaining']} but its entries sum to {g['moved']}"
        )


def _grant_entry(scope: Q) -> Iterator[Breach]:
    entries = Grant.objects.filter(scope).annotate(
        n=Count("entries", filter=Q(entries__kind="grant")),
        granted=Coalesce(Sum("entries__credits", filter=Q(entries__kind="grant")), ZERO),
    )
    for g in entries.exclude(n=1, granted=F("amount")).values("pk", "amount", "n", "granted"):
        yield Breach(
            "grant_entry", f"grant {g['pk']}", f"amount {g['amount']} but {g['n']} grant entries for {g['granted']}"
        )


def _account_available(scope: Q) -> Iterator[Breach]:
    in_grants = _sum_of(Grant.objects.filter(account=OuterRef("pk")), "remaining")
    in_entries = _entries_sum("credits", account=OuterRef("pk"))
    rows = (
        Account.objects.filter(scope)
        .annotate(g=in_grants, e=in_entries)
        .filter(~Q(available_credits=F("g")) | ~Q(available_credits=F("e")))
    )
    for a in rows.values("public_id", "available_credits", "g", "e"):
        yield Breach(
            "account_available",
            a["public_id"],
            f"cached available {a['available_credits']}, grants hold {a['g']}, entries sum to {a['e']}",
        )


def _account_held(scope: Q) -> Iterator[Breach]:
    pending = _sum_of(Hold.objects.filter(account=OuterRef("pk"), status=Hold.Status.PENDING), "credits")
    in_entries = _entries_sum("held_credits", account=OuterRef("pk"))
    rows = (
        Account.objects.filter(scope)
        .annotate(h=pending, e=in_entries)
        .filter(~Q(held_credits=F("h")) | ~Q(held_credits=F("e")))
    )
    for a in rows.values("public_id", "held_credits", "h", "e"):
        yield Breach(
            "account_held",
            a["public_id"],
            f"cached held {a['held_credits']}, pending holds {a['h']}, entries sum to {a['e']}",
        )


def _free_periods(scope: Q) -> Iterator[Breach]:
    """The period recorded on the account is at least the newest free grant's: otherwise the
    lazy refill would try to grant a period twice."""
    newest = (
        Grant.objects.filter(account=OuterRef("pk"), source=Grant.Source.FREE_MONTHLY)
        .order_by("-period_start")
        .values("period_start")[:1]
    )
    rows = Account.objects.filter(scope).annotate(newest=Subquery(newest)).filter(newest__isnull=False)
    stale = rows.filter(Q(free_period_start__isnull=True) | Q(free_period_start__lt=F("newest")))
    for a in stale.values("public_id", "free_period_start", "newest"):
        yield Breach(
            "free_period",
            a["public_id"],
            f"records free period {a['free_period_start']} but has a free grant for {a['newest']}",
        )


def _holds(scope: Q) -> Iterator[Breach]:
    """A pending hold holds its credits, taken from its lots; a settled one holds none and has
    kept from its lots exactly what it captured (a release gives the rest back to them)."""
    held = _entries_sum("held_credits", hold=OuterRef("pk"))
    captured = _entries_sum("held_credits", hold=OuterRef("pk"), kind="capture")
    taken = _entries_sum("credits", hold=OuterRef("pk"))
    rows = Hold.objects.filter(scope).annotate(held_now=held, captured_now=captured, taken_now=taken)
    pending = Q(status=Hold.Status.PENDING)
    expected = (pending & Q(held_now=F("credits"), taken_now=-F("credits"))) | (
        ~pending & Q(held_now=0, taken_now=-F("captured_credits"))
    )
    for h in rows.exclude(expected & Q(captured_now=-F("captured_credits"))).values(
        "public_id", "status", "credits", "captured_credits", "held_now", "captured_now", "taken_now"
    ):
        yield Breach(
            "hold",
            h["public_id"],
            f"{h['status']} hold of {h['credits']} (captured {h['captured_credits']}) has {h['held_now']} held, "
            f"{-h['captured_now']} captured and {-h['taken_now']} kept from its lots in its entries",
        )


def _debits(scope: Q) -> Iterator[Breach]:
    taken = _entries_sum("credits", debit=OuterRef("pk"), kind="debit")
    given = _entries_sum("credits", debit=OuterRef("pk"), kind="refund")
    rows = Debit.objects.filter(scope).annotate(taken=taken, given=given)
    ok = Q(taken=-F("credits")) & (
        Q(refunded_at__isnull=True, given=0) | Q(refunded_at__isnull=False, given=F("credits"))
    )
    for d in rows.exclude(ok).values("public_id", "credits", "taken", "given", "refunded_at"):
        yield Breach(
            "debit",
            d["public_id"],
            f"debit of {d['credits']} took {-d['taken']} and gave back {d['given']}"
            f" (refunded: {bool(d['refunded_at'])})",
        )


def _purchases(scope: Q) -> Iterator[Breach]:
    """A paid purchase has exactly one purchase grant of its credits, on its account; its
    clawbacks are its grant's clawback entries and never exceed what it granted; while it owes
    credits (unrecoverable), its lot has none left (credits coming back pay that first)."""
    clawed = _entries_sum("credits", grant=OuterRef("grant_id"), kind="clawback")
    rows = Purchase.objects.filter(scope).exclude(status__in=["pending", "canceled"]).annotate(clawed=clawed)
    ok = (
        Q(grant__isnull=False, grant__source="purchase", grant__amount=F("credits"), grant__account=F("account"))
        & Q(clawed=-F("clawed_back_credits"))
        & Q(clawed_back_credits__lte=F("credits"))
        & (Q(unrecoverable_credits=0) | Q(grant__remaining=0))
    )
    fields = ["public_id", "status", "credits", "grant_id", "clawed", "clawed_back_credits"]
    for p in rows.exclude(ok).values(*fields, "unrecoverable_credits", "grant__remaining"):
        yield Breach(
            "purchase",
            p["public_id"],
            f"{p['status']} purchase of {p['credits']} credits has grant {p['grant_id']}, "
            f"clawback entries {-p['clawed']} against {p['clawed_back_credits']} recorded, "
            f"{p['unrecoverable_credits']} unrecoverable with {p['grant__remaining']} left on the lot",
        )
    unpaid = Purchase.objects.filter(scope, status__in=["pending", "canceled"], grant__isnull=False)
    for public_id in unpaid.values_list("public_id", flat=True):
        yield Breach("purchase", public_id, "an unpaid purchase has a grant")


def _purchase_reversals(scope: Q) -> Iterator[Breach]:
    """Money that went back to the customer (refunds and lost disputes) takes back the credits it
    paid for: a purchase has clawed back, or records as owed, at least credits_to_claw_back of
    them (an operator's clawback of its lot may take more). Its status says what its refunds
    say; only a dispute keeps a purchase `disputed`."""
    status_agrees = (
        Q(status="disputed")
        | Q(status="refunded", refunded_cents=F("amount_cents"))
        | Q(status="partially_refunded", refunded_cents__gt=0, refunded_cents__lt=F("amount_cents"))
        | Q(status="paid", refunded_cents=0, disputed_cents=0)
    )
    reversed_or_off = Q(refunded_cents__gt=0) | Q(disputed_cents__gt=0) | ~status_agrees
    rows = Purchase.objects.filter(scope).exclude(status__in=["pending", "canceled"]).filter(reversed_or_off)
    fields = ["public_id", "status", "credits", "amount_cents", "refunded_cents", "disputed_cents"]
    for p in rows.annotate(agrees=ExpressionWrapper(status_agrees, output_field=BooleanField())).values(
        *fields, "clawed_back_credits", "unrecoverable_credits", "agrees"
    ):
        reversed_cents = p["refunded_cents"] + p["disputed_cents"]
        due = credits_to_claw_back(credits=p["credits"], amount_cents=p["amount_cents"], reversed_cents=reversed_cents)
        if p["agrees"] and due <= p["clawed_back_credits"] + p["unrecoverable_credits"]:
            continue
        yield Breach(
            "purchase_reversal",
            p["public_id"],
            f"{p['status']} purchase of {p['amount_cents']} cents with {p['refunded_cents']} refunded and "
            f"{p['disputed_cents']} disputed owes back {due} credits, but clawed back "
            f"{p['clawed_back_credits']} and records {p['unrecoverable_credits']} unrecoverable",
        )


def _running_balances(scope: Q) -> Iterator[Breach]:
    """Each entry's balance_after and held_after are its account's running totals up to it, in
    entry order (every writer appends under the account's lock, so ids follow the account's
    history): the statement an account holder reads adds up."""
    rows = LedgerEntry.objects.filter(scope).annotate(
        run=Window(Sum("credits"), partition_by=[F("account_id")], order_by=F("id").asc()),
        run_held=Window(Sum("held_credits"), partition_by=[F("account_id")], order_by=F("id").asc()),
    )
    off = rows.annotate(off=Abs(F("balance_after") - F("run")) + Abs(F("held_after") - F("run_held")))
    for e in off.filter(off__gt=0).values("pk", "balance_after", "held_after", "run", "run_held"):
        yield Breach(
            "entry_balance",
            f"entry {e['pk']}",
            f"balance_after {e['balance_after']} and held_after {e['held_after']}, "
            f"but the entries up to it sum to {e['run']} and {e['run_held']}",
        )


def _refunds_per_lot(scope: Q) -> Iterator[Breach]:
    """A refunded debit gave each lot back exactly what it took from it: credits never come back
    to another lot (one that expires later, or never)."""
    refunded = LedgerEntry.objects.filter(scope, debit__isnull=False, debit__refunded_at__isnull=False)
    per_lot = refunded.order_by().values("debit__public_id", "grant_id").annotate(net=Sum("credits"))
    for r in per_lot.exclude(net=0):
        yield Breach(
            "refund_lot", r["debit__public_id"], f"refunded, but lot {r['grant_id']} is {r['net']:+d} after it"
        )


def _holds_per_lot(scope: Q) -> Iterator[Breach]:
    """A hold gives a lot back at most what it took from it, and all of it once released or
    lapsed: credits never come back to another lot."""
    entries = LedgerEntry.objects.filter(scope, hold__isnull=False, grant__isnull=False)
    per_lot = entries.order_by().values("hold__public_id", "hold__status", "grant_id").annotate(net=Sum("credits"))
    returned = Q(hold__status__in=[Hold.Status.RELEASED, Hold.Status.EXPIRED])
    for r in per_lot.filter(Q(net__gt=0) | (returned & ~Q(net=0))):
        yield Breach(
            "hold_lot",
            r["hold__public_id"],
            f"{r['hold__status']} hold leaves lot {r['grant_id']} {r['net']:+d} (it may only keep what it took)",
        )


def _voided_lots(scope: Q) -> Iterator[Breach]:
    """A voided lot holds no credits (what comes back to it is voided at once), and only a voided
    lot has `void` entries."""
    voided = Exists(LedgerEntry.objects.filter(grant=OuterRef("pk"), kind="void"))
    rows = Grant.objects.filter(scope).annotate(has_void=voided)
    wrong = Q(voided_at__isnull=False, remaining__gt=0) | Q(voided_at__isnull=True, has_void=True)
    for g in rows.filter(wrong).values("pk", "voided_at", "remaining", "has_void"):
        state = "voided" if g["voided_at"] else "not voided"
        yield Breach(
            "voided_lot",
            f"grant {g['pk']}",
            f"{state}, {g['remaining']} left, {'has' if g['has_void'] else 'no'} void entries",
        )


def _early_expiries(scope: Q) -> Iterator[Breach]:
    """Credits expire only from a lot that has lapsed: an `expire` entry carries the business time
    of its movement, at or after its lot's expires_at."""
    early = Q(grant__expires_at__isnull=True) | Q(created_at__lt=F("grant__expires_at"))
    rows = LedgerEntry.objects.filter(scope, kind="expire").filter(early)
    for e in rows.values("pk", "grant_id", "credits", "created_at", "grant__expires_at"):
        yield Breach(
            "early_expiry",
            f"entry {e['pk']}",
            f"expired {-e['credits']} of lot {e['grant_id']} at {e['created_at']}, "
            f"which expires at {e['grant__expires_at']}",
        )


_ON_LOT = Q(grant__isnull=False, hold__isnull=True, debit__isnull=True, held_credits=0)
_FOR_DEBIT = Q(grant__isnull=False, hold__isnull=True, debit__isnull=False, held_credits=0)
_FOR_HOLD = Q(grant__isnull=False, hold__isnull=False, debit__isnull=True, held_credits=-F("credits"))
# What each kind of entry names and which way it moves credits (the writers in billing/sql).
ENTRY_SHAPES: dict[str, Q] = {
    "grant": _ON_LOT & Q(credits__gt=0),
    "debit": _FOR_DEBIT & Q(credits__lt=0),
    "refund": _FOR_DEBIT & Q(credits__gt=0),
    "hold": _FOR_HOLD & Q(credits__lt=0),
    "release": _FOR_HOLD & Q(credits__gt=0),
    "capture": Q(grant__isnull=True, hold__isnull=False, debit__isnull=True, credits=0, held_credits__lte=0),
    "expire": _ON_LOT & Q(credits__lt=0),
    "void": _ON_LOT & Q(credits__lt=0),
    "clawback": _ON_LOT & Q(credits__lt=0),
    "adjust": _ON_LOT,
}


def _entry_shapes(scope: Q) -> Iterator[Breach]:
    """Every entry names what its kind moves: a debit's or refund's entry its debit, a hold's,
    release's or capture's its hold, every change of a lot its lot; so no credits move without
    the debit, hold or lot that answers for them."""
    shaped = Q()
    for kind, shape in ENTRY_SHAPES.items():
        shaped |= Q(kind=kind) & shape
    rows = LedgerEntry.objects.filter(scope).exclude(shaped)
    for e in rows.values("pk", "kind", "credits", "held_credits", "grant_id", "hold_id", "debit_id"):
        yield Breach(
            "entry_shape",
            f"entry {e['pk']}",
            f"{e['kind']} of {e['credits']:+d} ({e['held_credits']:+d} held) names lot {e['grant_id']}, "
            f"hold {e['hold_id']}, debit {e['debit_id']}",
        )


def _recorded_answers(scope: Q) -> Iterator[Breach]:
    """A recorded answer that says a debit or a hold was made names one that exists, on the
    account and of the credits it says: retries are answered with it instead of moving credits."""
    same = {"public_id": OuterRef("made"), "account__public_id": OuterRef("on"), "said": OuterRef("said")}
    as_text = {"said": Cast("credits", CharField())}  # compared as text: no cast of what a body holds
    debit = Debit.objects.annotate(**as_text).filter(**same)
    hold = Hold.objects.annotate(**as_text).filter(**same)
    rows = IdempotencyKey.objects.filter(status_code__gte=200, status_code__lt=300).annotate(
        made=KT("response_body__id"), on=KT("response_body__account"), said=KT("response_body__credits")
    )
    made = rows.filter(scope, Q(made__startswith="deb_") | Q(made__startswith="hold_"))
    for k in made.exclude(Exists(debit) | Exists(hold)).values("scope", "key", "made", "on", "said"):
        yield Breach(
            "recorded_answer",
            f"key {k['scope']}:{k['key']}",
            f"answers {k['made']} of {k['said']} credits on {k['on']}, which the ledger does not have",
        )


CHECKS: list[tuple[Callable[[Q], Iterator[Breach]], str]] = [
    (_grant_movements, "grant"),
    (_grant_entry, "grant"),
    (_account_available, "account"),
    (_account_held, "account"),
    (_free_periods, "account"),
    (_holds, "hold"),
    (_debits, "debit"),
    (_purchases, "purchase"),
    (_purchase_reversals, "purchase"),
    (_running_balances, "entry"),
    (_refunds_per_lot, "entry"),
    (_holds_per_lot, "entry"),
    (_voided_lots, "grant"),
    (_early_expiries, "entry"),
    (_entry_shapes, "entry"),
    (_recorded_answers, "answer"),
]


def ledger_breaches(*, account_ids: list[int] | None = None) -> list[Breach]:
    breaches: list[Breach] = []
    for check, subject in CHECKS:
        if account_ids is None:
            scope = Q()
        elif subject == "account":
            scope = Q(pk__in=account_ids)
        elif subject == "answer":
            scope = Q(on__in=Account.objects.filter(pk__in=account_ids).values("public_id"))
        else:
            scope = Q(account_id__in=account_ids)
        breaches.extend(check(scope))
    return breaches

"""An independent model of the money rules of DESIGN.md ("The money engine", "Domain").

The property-based state machine (test_ledger_properties.py) drives the real services and
compares every balance, lot, hold and refusal with this model: it is the oracle that proves the
engine. So it is plain Python written from the rules alone, and it imports nothing from
`billing` or `accounts` (not even their period arithmetic or default priorities): a rule
written wrong in the engine must not be written the same wrong way here by reuse. Its free
periods come from the tests' period oracle (tests/billing/period_oracle.py), the one plain-Python
period arithmetic the engine's SQL period functions are also tested against. The names it
shares with the engine are the words of DESIGN.md: grant sources, hold statuses, error codes.

Rules modelled:
- Spend order: earliest `expires_at` first, never-expiring last, then lower `priority`, then the
  older lot, which is the lot made first: ids come from one sequence, so the lower id.
- Expiry to the instant: a lot or hold is expired iff `expires_at <= now`. An expired lot is
  never spendable; credits that go back to it (a release, the rest of a capture, a refund)
  expire with it.
- Holds reserve from lots in spend order; a capture charges the lots in the order they were
  held and gives the rest back; a release gives all back; a hold not settled by its expiry is
  released automatically (and a capture or release from that instant answers `expired`).
- A debit refund gives each lot back what the debit took from it, once.
- Clawback takes up to N of one lot's unspent, unexpired credits; void takes all of them.
  Held credits are not there to take (they come back to the lot when released); what comes
  back to a voided lot is voided at once. A purchase's lot is not voided (refused with
  `purchase_grant`): its credits are clawed back.
- Free monthly credits: periods start at each anchor-day midnight UTC, the first at
  `first_period_start`; the period at `now` is the latest start at or before now. Period 0 gets
  the first-period amount, later ones the per-period amount; a free grant expires when the
  next period starts. A suspended account gets none. The current period's grant is made by the
  first movement on the account (or the refill job) in that period, at most once; periods in
  which nothing moved are never granted afterwards.
- Suspended accounts cannot spend (debits, holds): refused with `account_suspended`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.billing.period_oracle import Period, boundary_at_or_before, period_at

PURCHASE = "purchase"  # the only source counted as paid; every other source is free
FREE_MONTHLY = "free_monthly"

# Error codes of DESIGN.md ("Errors"), which the machine maps to the services' exceptions.
INSUFFICIENT_CREDITS = "insufficient_credits"
ACCOUNT_SUSPENDED = "account_suspended"
NOT_FOUND = "not_found"
HOLD_NOT_PENDING = "hold_not_pending"
HOLD_EXPIRED = "hold_expired"
DEBIT_ALREADY_REFUNDED = "debit_already_refunded"
PURCHASE_GRANT = "purchase_grant"

# Hold states. LAPSED: past its expiry, so released in the model at that instant; the database
# may still show it pending until something settles the account (or already expired).
PENDING, LAPSED, EXPIRED, CAPTURED, RELEASED = "pending", "lapsed", "expired", "captured", "released"
# What the database may show for a hold in each model state.
DB_STATUSES = {
    PENDING: {PENDING},
    LAPSED: {PENDING, EXPIRED},
    EXPIRED: {EXPIRED},
    CAPTURED: {CAPTURED},
    RELEASED: {RELEASED},
}

_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Refusal:
    code: str
    details: dict[str, Any] = field(default_factory=dict)


# --- Lots and the spend order --------------------------------------------------------------


@dataclass(eq=False)
class Lot:
    pk: int  # ids come from one sequence: the lower id is the lot made first
    source: str
    amount: int
    priority: int
    expires_at: datetime | None
    # Credits the lot would hold had it never expired: granted, minus held, spent, clawed back
    # and voided, plus given back. Once the lot has expired none of it counts, so "back to an
    # expired lot" means "expired".
    remaining: int
    # Voided by an operator: nothing given back to it returns to it (it is voided at once).
    voided: bool = False

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def spend_key(self) -> tuple[bool, datetime, int, int]:
        return (self.expires_at is None, self.expires_at or _NEVER, self.priority, self.pk)

    @property
    def paid(self) -> bool:
        return self.source == PURCHASE


Allocation = list[tuple[Lot, int]]


def give_back(allocations: Allocation) -> None:
    for lot, part in allocations:
        if not lot.voided:
            lot.remaining += part


def take_from(allocations: Allocation) -> None:
    for lot, part in allocations:
        lot.remaining -= part


def rest_after_capture(allocations: Allocation, captured: int) -> Allocation:
    """What goes back after capturing `captured` credits, charging the lots in the order held."""
    rest = []
    for lot, part in allocations:
        charged = min(part, captured)
        captured -= charged
        rest.append((lot, part - charged))
    return rest


# --- Holds and debits ----------------------------------------------------------------------


@dataclass(eq=False)
class ModelHold:
    pk: int
    account: int  # the machine's index of the account
    credits: int
    expires_at: datetime
    allocations: Allocation
    state: str = PENDING
    captured: int = 0

    def lapse(self, now: datetime) -> bool:
        """Release the hold if it is pending and due at `now`; whether it lapsed now."""
        if self.state != PENDING or self.expires_at > now:
            return False
        give_back(self.allocations)
        self.state = LAPSED
        return True

    def settled_refusal(self) -> Refusal | None:
        """The refusal a capture or release gets once the hold is settled (None while open)."""
        if self.state in (PENDING, LAPSED):
            return None
        if self.state == EXPIRED:
            return Refusal(HOLD_EXPIRED)
        return Refusal(HOLD_NOT_PENDING, {"status": self.state})

    def capture(self, credits: int | None) -> tuple[str, int]:
        """Capture an open hold: the status and captured credits the service must answer.

        From its expiry on, a hold is not captured: it comes back expired, its credits (back in
        the model already) released.
        """
        assert self.settled_refusal() is None
        if self.state == LAPSED:
            self.state = EXPIRED
            return EXPIRED, 0
        captured = self.credits if credits is None else credits
        give_back(rest_after_capture(self.allocations, captured))
        self.state, self.captured = CAPTURED, captured
        return CAPTURED, captured

    def release(self) -> str:
        assert self.settled_refusal() is None
        if self.state == LAPSED:
            self.state = EXPIRED
            return EXPIRED
        give_back(self.allocations)
        self.state = RELEASED
        return RELEASED


@dataclass(eq=False)
class ModelDebit:
    pk: int
    account: int
    allocations: Allocation
    refunded: bool = False

    def refund(self) -> Refusal | None:
        """Give each lot back what the debit took from it; refused the second time."""
        if self.refunded:
            return Refusal(DEBIT_ALREADY_REFUNDED)
        give_back(self.allocations)
        self.refunded = True
        return None


# --- Free monthly periods ------------------------------------------------------------------


@dataclass(frozen=True)
class FreePolicy:
    first_period_credits: int
    per_period_credits: int
    latest_anchor_day: int

    def credits_for(self, index: int) -> int:
        return self.first_period_credits if index == 0 else self.per_period_credits


@dataclass(frozen=True)
class FreePlan:
    """An account's free-credit calendar: periods start monthly on the anchor day, the first at
    `first_period_start`, with the tests' one period arithmetic (tests/billing/period_oracle.py)."""

    anchor_day: int
    first_period_start: datetime

    @classmethod
    def for_signup(cls, signup_at: datetime, latest_anchor_day: int) -> FreePlan:
        """Anchored on the signup day (29th-31st and the like on the latest anchor day); the first
        period starts at the last anchor-day midnight at or before the signup."""
        anchor = min(signup_at.astimezone(UTC).day, latest_anchor_day)
        return cls(anchor, boundary_at_or_before(signup_at, anchor))

    def __post_init__(self) -> None:
        assert 1 <= self.anchor_day <= 28
        assert self.first_period_start == boundary_at_or_before(self.first_period_start, self.anchor_day), (
            "the first period starts on an anchor-day midnight"
        )

    def period_at(self, now: datetime) -> Period:
        """The latest period start at or before `now` (never before the first period)."""
        return period_at(first_period_start=self.first_period_start, anchor_day=self.anchor_day, now=now)

    def next_start_after(self, moment: datetime) -> datetime:
        """The first period start after `moment`."""
        period = self.period_at(moment)
        return period.start if period.start > moment else period.end


@dataclass(frozen=True)
class FreeGrantDue:
    period: Period
    credits: int


# --- Accounts ------------------------------------------------------------------------------


@dataclass(eq=False)
class ModelAccount:
    pk: int
    public_id: str
    plan: FreePlan | None = None  # None: an account kept out of free credits
    policy: FreePolicy | None = None
    suspended: bool = False
    lots: list[Lot] = field(default_factory=list)
    holds: list[ModelHold] = field(default_factory=list)
    # Start of the latest period whose free grant was made (or decided: a zero amount).
    free_granted_through: datetime | None = None

    def free_grant_due(self, now: datetime) -> FreeGrantDue | None:
        """The current period's free grant if the next movement must make it."""
        if self.plan is None or self.suspended:
            return None
        assert self.policy is not None
        period = self.plan.period_at(now)
        if self.free_granted_through is not None and self.free_granted_through >= period.start:
            return None
        return FreeGrantDue(period, self.policy.credits_for(period.index))

    def record_free_grant(self, due: FreeGrantDue, pk: int | None, priority: int) -> Lot | None:
        """The due free grant was made (as lot `pk`; None for a zero amount)."""
        self.free_granted_through = due.period.start
        if due.credits == 0:
            assert pk is None
            return None
        assert pk is not None
        lot = Lot(pk, FREE_MONTHLY, due.credits, priority, due.period.end, due.credits)
        self.lots.append(lot)
        return lot

    def spendable(self, now: datetime) -> int:
        """Credits in unexpired lots (the model has released every lapsed hold already)."""
        return sum(lot.remaining for lot in self.lots if not lot.expired(now))

    def spendable_after_settling(self, now: datetime) -> int:
        """What a spend may draw on: settling first makes the free grant if one is due."""
        due = self.free_grant_due(now)
        return self.spendable(now) + (due.credits if due is not None else 0)

    def held(self) -> int:
        return sum(hold.credits for hold in self.holds if hold.state == PENDING)

    def spend_refusal(self, credits: int, now: datetime) -> Refusal | None:
        """Why a debit or hold of `credits` is refused, or None when it is made."""
        if self.suspended:
            return Refusal(ACCOUNT_SUSPENDED)
        available = self.spendable_after_settling(now)
        if available < credits:
            return Refusal(INSUFFICIENT_CREDITS, {"available": available, "requested": credits})
        return None

    def take(self, credits: int, now: datetime) -> Allocation:
        """The lots a spend of `credits` draws from, in spend order, and how much from each.

        Call it once the due free grant (if any) is recorded.
        """
        assert self.free_grant_due(now) is None, "settle (make the due free grant) before taking"
        taken, left = [], credits
        for lot in sorted(self.lots, key=Lot.spend_key):
            if left == 0:
                break
            if lot.expired(now) or lot.remaining == 0:
                continue
            part = min(lot.remaining, left)
            taken.append((lot, part))
            left -= part
        assert left == 0, f"took {credits - left} of {credits}: check spend_refusal first"
        take_from(taken)
        return taken

    def clawback(self, lot: Lot, credits: int, now: datetime) -> int:
        """Take up to `credits` of the lot's unspent, unexpired credits; how many were taken."""
        taken = 0 if lot.expired(now) else min(credits, lot.remaining)
        lot.remaining -= taken
        return taken

    def void_refusal(self, lot: Lot) -> Refusal | None:
        """A purchase's lot is not voided: its credits are clawed back."""
        return Refusal(PURCHASE_GRANT) if lot.paid else None

    def void(self, lot: Lot, now: datetime) -> int:
        """Take all of the lot's unspent, unexpired credits, and whatever comes back to it later;
        how many were taken now."""
        assert self.void_refusal(lot) is None
        lot.voided = True
        return self.clawback(lot, lot.remaining, now)


@dataclass(frozen=True)
class BatchItem:
    account: ModelAccount | None  # None: an account id nobody has
    credits: int


@dataclass(frozen=True)
class BatchResult:
    refusal: Refusal | None
    allocations: Allocation
    available: int = 0  # after the item, when made
    held: int = 0


def batch_debits(items: list[BatchItem], now: datetime) -> list[BatchResult]:
    """Each item charged in order, on its own: a refusal of one leaves the others alone.

    Call it once the free grants due on the items' accounts are recorded (the batch settles
    every account it names before it charges any).
    """
    results = []
    for item in items:
        account = item.account
        if account is None:
            results.append(BatchResult(Refusal(NOT_FOUND), []))
            continue
        refusal = account.spend_refusal(item.credits, now)
        if refusal is not None:
            results.append(BatchResult(refusal, []))
            continue
        taken = account.take(item.credits, now)
        results.append(BatchResult(None, taken, account.spendable(now), account.held()))
    return results

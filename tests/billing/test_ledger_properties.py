"""Property-based tests of the ledger services against the independent model of the money rules.

Hypothesis drives random sequences of every credit movement over a handful of accounts: grants,
debits, holds, captures (full and partial), releases, debit refunds, batch debits (with unknown
and suspended accounts among the items), clawbacks, voids, suspensions and reactivations,
accounts that receive free monthly credits, the three scheduled jobs (hold timeouts, grant
expiry, the free refill) and clock moves of seconds to weeks, often landing exactly on an
expiry or a period start. The model (tests/billing/ledger_model.py, plain Python that shares no
code with the engine) predicts which lots each spend draws from, when a spend is refused and
why, when a free grant falls due and for how much, and every balance. After every step the
ledger invariants must hold and the database must agree with the model for every account (so a
step on one must leave the others alone).

The clock is passed explicitly (`now=`) and only ever moves forward.

Every movement settles its account first (DESIGN.md, "The money engine": lapsed holds released,
the due free grant made, lapsed lots expired), so after each one the machine requires all three.
The model releases a lapsed hold at its expiry instant; until something settles the account the
database may still show it pending, and the checks accept that. Where the rules leave it open,
the machine accepts either and catches up: whether a refused movement keeps the settling it did
(the clock's work, not the request's), and what the scheduled jobs settle besides their own work
(hold timeouts, lot expiry, the free refill).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F, Max, Sum
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Account
from billing.errors import BillingError
from billing.integrity import ledger_breaches
from billing.models import Debit, Grant, Hold, JobRun, LedgerEntry
from billing.policy import policy_get
from billing.selectors import balance_get, balance_json
from billing.services.batch import BatchDebit, debits_create_batch
from billing.services.jobs import grants_expire_due, holds_expire_due, job_run_inline
from billing.services.ledger import (
    Actor,
    account_settle,
    debit_create,
    debit_refund,
    grant_clawback,
    grant_create,
    grant_void,
    hold_capture,
    hold_create,
    hold_release,
)
from tests.billing.factories import make_account
from tests.billing.ledger_model import (
    DB_STATUSES,
    EXPIRED,
    FREE_MONTHLY,
    LAPSED,
    PENDING,
    Allocation,
    BatchItem,
    FreeGrantDue,
    FreePlan,
    FreePolicy,
    Lot,
    ModelAccount,
    ModelDebit,
    ModelHold,
    Refusal,
    batch_debits,
)

pytestmark = pytest.mark.django_db

START = datetime(2031, 3, 14, 12, 0, 0, tzinfo=UTC)
SERVICE = Actor("service", "generation")
STAFF = Actor("staff", "property-test")
DAY = 86_400
MAX_ACCOUNTS = 5
UNKNOWN_ACCOUNT = "acct_nobodyhasthisid"

# Lots granted by hand use the other sources (free_monthly lots belong to the free periods);
# spend order does not depend on the source.
SOURCES = [Grant.Source.ADJUSTMENT, Grant.Source.PROMO, Grant.Source.PURCHASE]
# What a movement that settles its account must have settled.
SETTLES = {"free": True, "holds": True, "lots": True}
# The entries settling writes: lapsed holds released, lapsed lots expired, the free grant made.
SETTLING_KINDS = {LedgerEntry.Kind.RELEASE, LedgerEntry.Kind.EXPIRE, LedgerEntry.Kind.GRANT}


def weighted(*branches: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """st.one_of with weights (one_of picks its branches evenly, and a repeated branch counts once)."""
    choices = [strategy for weight, strategy in branches for _ in range(weight)]
    return st.integers(0, len(choices) - 1).flatmap(lambda n: choices[n])


# The machine starts with a plain account (no free credits), a free one and a plain one, and may
# open more free ones. Steps pick an account by `pick % number of accounts`, so the first two
# get most steps (long sequences on one account) and the rest enough to show that nothing done
# to one account moves another.
account_pick = st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4])
# Mostly small lots, so that spends and holds often straddle several of them.
lot_size = st.one_of(st.integers(1, 6), st.integers(1, 50))
# A lot's expiry as seconds from now. The fixed values make ties in expiry (so priority and
# age decide) and shared boundaries common; <= 0 is a lot that arrives expired; PERIOD_END ties
# it with a free grant's expiry (priority 10 then competes with the free lot's).
PERIOD_END = "period_end"
expiry_offset = weighted(
    (2, st.none()),
    (2, st.sampled_from([0, 1, 60, 3_600, DAY, 2 * DAY, 7 * DAY, 30 * DAY, 90 * DAY, PERIOD_END])),
    (1, st.integers(-120, 40 * DAY)),
)
priority_choice = st.one_of(st.none(), st.sampled_from([0, 10, 20, 50, 100]))
# (account pick, credits, source, expiry offset, priority)
LotSpec = tuple[int, int, str, int | str | None, int | None]
lot_spec = st.tuples(account_pick, lot_size, st.sampled_from(SOURCES), expiry_offset, priority_choice)
# Spends are mostly small so that most succeed and leave debits to refund and holds to settle;
# the occasional large one is refused (unless a free grant has just arrived).
spend_size = st.one_of(st.integers(1, 6), st.integers(1, 15), st.integers(1, 60))
# Or (ALL, k): k more than the account can spend. All of it straddles every lot; one more is the
# smallest spend refused.
ALL = "all"
relative_amount = st.tuples(st.just(ALL), st.sampled_from([-2, -1, 0, 0, 1]))
spend_amount = weighted((3, spend_size), (1, relative_amount))
# Holds straddle lots more often, for captures to charge them in order.
hold_amount = weighted((1, spend_size), (1, relative_amount))
hold_timeout = st.one_of(st.sampled_from([1, 60, 900, 3_600, DAY]), st.integers(1, DAY))
# Seconds to days, mostly; sometimes days to weeks, past lots, holds and free period starts.
clock_step = weighted(
    (2, st.sampled_from([1, 59, 60, 900, 3_600, DAY])),
    (2, st.integers(1, 3 * DAY)),
    (1, st.sampled_from([7, 14, 28, 30, 31]).map(lambda days: days * DAY) | st.integers(DAY, 45 * DAY)),
)
capture_amount = st.one_of(st.none(), st.integers(0, 10_000))  # None: all of it
# What follows a hold in the same step: nothing (False); a capture at once, of an amount as
# capture_amount (mostly a part); or (AT_EXPIRY, "capture" or "release") the clock moved to the
# hold's expiry second and the hold settled then, when it has just lapsed.
AT_EXPIRY = "at_expiry"
Then = bool | int | None | tuple[str, str]
then_settle = weighted(
    (3, st.just(False)),
    (2, st.integers(0, 10_000)),
    (1, st.none()),
    (1, st.tuples(st.just(AT_EXPIRY), st.sampled_from(["capture", "release"]))),
)
pick = st.integers(0, 10_000)
# Mostly a hold (debit, lot) still open, so acting on it does something; sometimes any, to
# settle (refund) one twice or claw back an expired lot.
open_only = st.sampled_from([True, True, True, False])
# Batch items name one of the accounts (as account_pick does), or (None) an id nobody has.
batch_target = st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4, None])
clawback_size = st.one_of(st.integers(0, 6), st.integers(0, 30))
# Suspensions are the rarer operator action: a suspended account refuses every spend.
suspend = st.sampled_from([True, False, False])

# What the run must have reached at least once, counted from the database at the end of each
# example: a run that never gets there proves nothing about it.
REACHED: Counter[str] = Counter()
MUST_REACH = ("lapsed lot expired", "free grant made", "later free period granted", "lapsed hold released")


def entry_allocations(**filters: object) -> list[tuple[int, int]]:
    entries = LedgerEntry.objects.filter(**filters).order_by("id").values_list("grant_id", "credits")
    return [(grant_id, -credits) for grant_id, credits in entries]


def model_allocations(allocations: Allocation) -> list[tuple[int, int]]:
    return [(lot.pk, part) for lot, part in allocations]


def next_day_of_month(after: datetime, day: int, second: int) -> datetime:
    """The first instant after `after` on day `day` of a month, `second` seconds past midnight."""
    year, month = after.year, after.month
    while True:
        try:
            moment = datetime(year, month, day, tzinfo=UTC) + timedelta(seconds=second)
        except ValueError:  # the month has no such day
            moment = None
        if moment is not None and moment > after:
            return moment
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Each example runs in its own savepoint, rolled back in teardown, so examples (and
        # Hypothesis' shrinking replays) never see each other's rows.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.now = START
        policy = policy_get()
        self.policy = FreePolicy(
            policy.free_credits_first_period, policy.free_credits_per_period, policy.latest_anchor_day
        )
        self.objs: list[Account] = []
        self.accounts: list[ModelAccount] = []
        for free in (False, True, False):
            self._open(free=free)
        self.debits: list[ModelDebit] = []
        self.wrote = True  # whether the last step may have written to the database
        # Credits left in each expired lot when last looked at: an expired lot never gains any.
        self.expired_left: dict[int, int] = {}
        # When each account last settled its lots: from then on, at that instant, no expired
        # lot of it holds credits in the database.
        self.lots_settled_at: dict[int, datetime] = {}
        # The last entry whose running balances were checked, and each account's balances then.
        self.last_entry = 0
        self.running: dict[int, tuple[int, int]] = {}

    def teardown(self) -> None:
        try:
            if not connection.needs_rollback:
                self._count_reached()
        finally:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)

    def _count_reached(self) -> None:
        ids = [acct.pk for acct in self.accounts]
        free = Grant.objects.filter(account_id__in=ids, source=Grant.Source.FREE_MONTHLY)
        reached = {
            # An expire entry on a lot that was live when made: it lapsed, and was expired.
            "lapsed lot expired": LedgerEntry.objects.filter(
                account_id__in=ids, kind=LedgerEntry.Kind.EXPIRE, grant__created_at__lt=F("grant__expires_at")
            ).count(),
            "free grant made": free.count(),
            "later free period granted": free.filter(period_start__gt=F("account__first_period_start")).count(),
            "lapsed hold released": Hold.objects.filter(account_id__in=ids, status=Hold.Status.EXPIRED).count(),
        }
        for what, count in reached.items():
            REACHED[what] += count
            if count:
                event(f"reached: {what}")

    # -- helpers ---------------------------------------------------------------------------

    def _open(self, *, free: bool) -> int:
        obj = make_account(now=self.now, free=free)
        plan = FreePlan.for_signup(self.now, self.policy.latest_anchor_day) if free else None
        if plan is not None:
            assert (obj.period_anchor_day, obj.first_period_start) == (plan.anchor_day, plan.first_period_start), (
                "the account's free periods are not anchored on its signup day"
            )
        self.objs.append(obj)
        self.accounts.append(ModelAccount(obj.pk, obj.public_id, plan, self.policy))
        return len(self.accounts) - 1

    def _index(self, pick: int) -> int:
        return pick % len(self.accounts)

    @property
    def holds(self) -> list[ModelHold]:
        return [hold for acct in self.accounts for hold in acct.holds]

    def _move_clock(self, to: datetime) -> None:
        assert to >= self.now
        self.now = to
        # A hold not settled by its expiry is released: the model does that at once.
        for hold in self.holds:
            hold.lapse(self.now)

    def _settled(self, index: int, *, free: bool = False, holds: bool = False, lots: bool = False) -> None:
        """Catch the model up with a movement on account `index` that may have settled it.

        Each flag says that the movement must have settled that part: made the due free grant,
        released the lapsed holds, expired the lapsed lots. Otherwise a free grant the movement
        made is taken in, and the hold and lot checks accept either state.
        """
        acct = self.accounts[index]
        due = acct.free_grant_due(self.now)
        if due is not None:
            self._take_in_free_grant(index, due, must=free)
        if holds:
            for hold in acct.holds:
                if hold.state == LAPSED:
                    hold.state = EXPIRED
        if lots:
            self.lots_settled_at[index] = self.now

    def _take_in_free_grant(self, index: int, due: FreeGrantDue, *, must: bool) -> None:
        acct = self.accounts[index]
        found = (
            Grant.objects.filter(account_id=acct.pk, period_start=due.period.start)
            .values_list("pk", "source", "amount", "expires_at", "priority")
            .first()
        )
        if found is None:
            assert not must or due.credits == 0, (
                f"account {index}: no free grant for period {due.period.index} ({due.period.start:%Y-%m-%d}) "
                "after a movement that settles the account"
            )
            if must:
                acct.record_free_grant(due, None, 0)
            return
        pk, source, amount, expires_at, priority = found
        assert (source, amount, expires_at) == (FREE_MONTHLY, due.credits, due.period.end), (
            f"account {index}: free grant of period {due.period.index} is {source} {amount} expiring {expires_at}, "
            f"expected {due.credits} expiring {due.period.end}"
        )
        acct.record_free_grant(due, pk, priority)

    def _db_hold_status(self, hold: ModelHold) -> str:
        return Hold.objects.values_list("status", flat=True).get(pk=hold.pk)

    def _expect_refusal(self, index: int, refusal: Refusal, call: Callable[[], Any]) -> None:
        """The call is refused as the model says, and moves nothing of its own on account `index`.

        Every movement settles its account first. Whether a refusal keeps that settling (lapsed
        holds released, lapsed lots expired, the due free grant made) is the engine's choice: it
        is the clock's work, not the request's. The model takes in either.
        """
        mine = LedgerEntry.objects.filter(account_id=self.accounts[index].pk)
        last = mine.aggregate(last=Max("id"))["last"] or 0
        with pytest.raises(BillingError) as refused:
            call()
        assert refused.value.code == refusal.code, f"refused with {refused.value.code}, model: {refusal.code}"
        if refusal.details:
            assert refused.value.details == refusal.details
        written = set(mine.filter(id__gt=last).values_list("kind", flat=True))
        assert written <= SETTLING_KINDS, f"a refused call wrote {sorted(written - SETTLING_KINDS)} entries"
        self._settled(index)

    def _spend_credits(self, acct: ModelAccount, amount: int | tuple[str, int]) -> int:
        if isinstance(amount, int):
            return amount
        _, more = amount
        return max(1, acct.spendable_after_settling(self.now) + more)

    def _pick_hold(self, pick: int, open_only: bool) -> ModelHold:
        open_holds = [h for h in self.holds if h.state in (PENDING, LAPSED)]
        candidates = open_holds if open_only and open_holds else self.holds
        return candidates[pick % len(candidates)]

    def _pick_lot(self, pick: int, open_only: bool) -> tuple[int, Lot]:
        lots = [(index, lot) for index, acct in enumerate(self.accounts) for lot in acct.lots]
        live = [(index, lot) for index, lot in lots if lot.remaining > 0 and not lot.expired(self.now)]
        candidates = live if open_only and live else lots
        return candidates[pick % len(candidates)]

    def _lot_entries(self, lot: Lot, kind: str) -> int:
        return LedgerEntry.objects.filter(grant_id=lot.pk, kind=kind).aggregate(n=Sum("credits"))["n"] or 0

    # -- rules: credits in -----------------------------------------------------------------

    @initialize(
        lots=st.lists(lot_spec, min_size=1, max_size=8),
        holds=st.lists(st.tuples(account_pick, st.integers(1, 10), hold_timeout), max_size=3),
    )
    def opening_lots_and_holds(self, lots: list[LotSpec], holds: list[tuple[int, int, int]]) -> None:
        # Hypothesis switches random rules off per example (swarm testing): lots granted up
        # front keep the examples that lose `grant` from refusing every spend, and holds made up
        # front give the examples that lose `hold` holds to settle, capture and let lapse.
        self.grant(lots)
        for pick_, credits, expires_in in holds:
            self.hold(pick_, credits, expires_in, False)

    @rule(lots=st.lists(lot_spec, min_size=1, max_size=3))
    def grant(self, lots: list[LotSpec]) -> None:
        """One to three lots at once (spends straddle lots when an account has several)."""
        for pick_, credits, source, offset, priority in lots:
            self._grant(self._index(pick_), credits, source, offset, priority)

    def _grant(self, index: int, credits: int, source: str, offset: int | str | None, priority: int | None) -> None:
        acct = self.accounts[index]
        if offset == PERIOD_END:
            plan = acct.plan or self.accounts[1].plan
            assert plan is not None
            expires_at: datetime | None = plan.period_at(self.now).end
        else:
            expires_at = None if offset is None else self.now + timedelta(seconds=int(offset))
        grant = grant_create(
            account=self.objs[index], source=source, credits=credits, expires_at=expires_at, actor=STAFF,
            priority=priority, reason="property test", now=self.now,
        )  # fmt: skip
        assert grant.amount == credits and grant.expires_at == expires_at
        if priority is not None:
            assert grant.priority == priority
        # The stored priority: the per-source default is the service's to choose.
        acct.lots.append(Lot(grant.pk, source, credits, grant.priority, expires_at, credits))
        self._settled(index, **SETTLES)

    # -- rules: spends ---------------------------------------------------------------------

    @rule(pick=account_pick, amount=spend_amount)
    def debit(self, pick: int, amount: int | tuple[str, int]) -> None:
        index = self._index(pick)
        acct = self.accounts[index]
        credits = self._spend_credits(acct, amount)

        def spend() -> Debit:
            return debit_create(
                account=self.objs[index], credits=credits, actor=SERVICE, reference="prop", now=self.now
            )

        refusal = acct.spend_refusal(credits, self.now)
        if refusal is not None:
            self._expect_refusal(index, refusal, spend)
            return
        debit = spend()
        assert debit.credits == credits
        self._settled(index, **SETTLES)
        taken = acct.take(credits, self.now)
        assert entry_allocations(debit_id=debit.pk, kind=LedgerEntry.Kind.DEBIT) == model_allocations(taken), (
            "the debit did not draw from the lots in spend order"
        )
        self.debits.append(ModelDebit(debit.pk, index, taken))

    @rule(pick=account_pick, amount=hold_amount, expires_in=hold_timeout, then=then_settle)
    def hold(self, pick: int, amount: int | tuple[str, int], expires_in: int, then: Then) -> None:
        """Hold; then sometimes capture at once (as the generation service does when images come
        back), or settle the hold the very second it lapses."""
        index = self._index(pick)
        acct = self.accounts[index]
        credits = self._spend_credits(acct, amount)

        def reserve() -> Hold:
            return hold_create(
                account=self.objs[index], credits=credits, expires_in=expires_in, actor=SERVICE, reference="prop",
                now=self.now,
            )  # fmt: skip

        refusal = acct.spend_refusal(credits, self.now)
        if refusal is not None:
            self._expect_refusal(index, refusal, reserve)
            return
        hold = reserve()
        assert hold.status == Hold.Status.PENDING and hold.credits == credits
        assert hold.expires_at == self.now + timedelta(seconds=expires_in)
        self._settled(index, **SETTLES)
        taken = acct.take(credits, self.now)
        assert entry_allocations(hold_id=hold.pk, kind=LedgerEntry.Kind.HOLD) == model_allocations(taken), (
            "the hold did not draw from the lots in spend order"
        )
        acct.holds.append(ModelHold(hold.pk, index, credits, hold.expires_at, taken))
        if isinstance(then, tuple):
            self._move_clock(hold.expires_at)
            if then[1] == "capture":
                self._capture(acct.holds[-1], None)
            else:
                self._release(acct.holds[-1])
        elif then is not False:
            self._capture(acct.holds[-1], then)

    @rule(items=st.lists(st.tuples(batch_target, spend_size), min_size=1, max_size=6))
    def batch(self, items: list[tuple[int | None, int]]) -> None:
        """Debits for several accounts (and an unknown one) at once, each made or refused on its own."""
        indexes = [None if target is None else self._index(target) for target, _ in items]
        outcomes = debits_create_batch(
            items=[
                BatchDebit(
                    account=UNKNOWN_ACCOUNT if index is None else self.accounts[index].public_id,
                    credits=credits,
                    reference=f"batch-{n}",
                )
                for n, (index, (_, credits)) in enumerate(zip(indexes, items, strict=True))
            ],
            actor=SERVICE,
            now=self.now,
        )
        assert len(outcomes) == len(items)
        named = sorted({index for index in indexes if index is not None})
        for index in named:
            # Each account is settled before its first item, whether or not any is made: the free
            # grant the batch made is spent like any lot.
            self._settled(index, **SETTLES)
        results = batch_debits(
            [
                BatchItem(None if index is None else self.accounts[index], credits)
                for index, (_, credits) in zip(indexes, items, strict=True)
            ],
            self.now,
        )
        for n, (index, outcome, result) in enumerate(zip(indexes, outcomes, results, strict=True)):
            if result.refusal is not None:
                assert outcome.body is None and outcome.error is not None, f"item {n}: made, model refuses it"
                assert outcome.error.code == result.refusal.code, f"item {n}: {outcome.error.code}"
                if result.refusal.details:
                    assert outcome.error.details == result.refusal.details, f"item {n}"
                continue
            assert index is not None and outcome.error is None and outcome.body is not None, (
                f"item {n}: refused with {outcome.error and outcome.error.code}, model makes it"
            )
            body = outcome.body
            assert (body["account"], body["credits"]) == (self.accounts[index].public_id, items[n][1])
            debit = Debit.objects.values_list("pk", flat=True).get(public_id=body["id"])
            assert entry_allocations(debit_id=debit, kind=LedgerEntry.Kind.DEBIT) == model_allocations(
                result.allocations
            ), f"item {n}: the debit did not draw from the lots in spend order"
            after = (body["balance"]["available"], body["balance"]["held"])
            assert after == (result.available, result.held), f"item {n}: balance after"
            self.debits.append(ModelDebit(debit, index, result.allocations))

    # -- rules: settling holds -------------------------------------------------------------

    @precondition(lambda self: self.holds)
    @rule(pick=pick, open_only=open_only, amount=capture_amount)
    def capture(self, pick: int, open_only: bool, amount: int | None) -> None:
        self._capture(self._pick_hold(pick, open_only), amount)

    @precondition(lambda self: self.holds)
    @rule(pick=pick, open_only=open_only)
    def release(self, pick: int, open_only: bool) -> None:
        self._release(self._pick_hold(pick, open_only))

    @precondition(lambda self: any(h.state == PENDING for h in self.holds))
    @rule(pick=pick, then=st.sampled_from(["nothing", "capture", "release"]), amount=capture_amount)
    def advance_clock_to_a_hold_expiry(self, pick: int, then: str, amount: int | None) -> None:
        """Land exactly on a pending hold's expiry, and maybe try to settle it that very second."""
        pending = [h for h in self.holds if h.state == PENDING]
        hold = pending[pick % len(pending)]
        self._move_clock(hold.expires_at)
        if then == "capture":
            self._capture(hold, amount)
        elif then == "release":
            self._release(hold)
        else:
            self.wrote = False

    def _capture(self, hold: ModelHold, amount: int | None) -> None:
        credits = None if amount is None else amount % (hold.credits + 1)

        def capture() -> Hold:
            return hold_capture(hold=Hold.objects.get(pk=hold.pk), actor=SERVICE, credits=credits, now=self.now)

        if self._already_settled(hold, capture):
            return
        result = capture()
        assert (result.status, result.captured_credits) == hold.capture(credits)
        self._settled(hold.account, **SETTLES)

    def _release(self, hold: ModelHold) -> None:
        def release() -> Hold:
            return hold_release(hold=Hold.objects.get(pk=hold.pk), actor=SERVICE, now=self.now)

        if self._already_settled(hold, release):
            return
        assert release().status == hold.release()
        self._settled(hold.account, **SETTLES)

    def _already_settled(self, hold: ModelHold, settle: Callable[[], Any]) -> bool:
        """Settling a settled hold is refused and moves nothing; returns whether it was settled.

        An expired hold answers hold_expired, a captured or released one hold_not_pending.
        """
        db_status = self._db_hold_status(hold)
        if hold.state == PENDING or (hold.state == LAPSED and db_status == Hold.Status.PENDING):
            return False
        if hold.state == LAPSED:  # the database has settled it meanwhile
            hold.state = EXPIRED
        assert db_status == hold.state
        refusal = hold.settled_refusal()
        assert refusal is not None
        self._expect_refusal(hold.account, refusal, settle)
        return True

    # -- rules: refunds, clawbacks, voids --------------------------------------------------

    @precondition(lambda self: self.debits)
    @rule(pick=pick, open_only=open_only)
    def refund(self, pick: int, open_only: bool) -> None:
        unrefunded = [d for d in self.debits if not d.refunded]
        candidates = unrefunded if open_only and unrefunded else self.debits
        debit = candidates[pick % len(candidates)]

        def refund() -> Debit:
            return debit_refund(debit=Debit.objects.get(pk=debit.pk), actor=SERVICE, now=self.now)

        if debit.refunded:
            refusal = debit.refund()
            assert refusal is not None
            self._expect_refusal(debit.account, refusal, refund)
            return
        assert refund().refunded_at == self.now
        # Back to the very lots it came from; a lot that expired meanwhile expires them at once.
        assert debit.refund() is None
        self._settled(debit.account, **SETTLES)

    @precondition(lambda self: any(acct.lots for acct in self.accounts))
    @rule(pick=pick, open_only=open_only, credits=clawback_size)
    def clawback(self, pick: int, open_only: bool, credits: int) -> None:
        index, lot = self._pick_lot(pick, open_only)
        before = self._lot_entries(lot, LedgerEntry.Kind.CLAWBACK)
        taken = grant_clawback(
            grant=Grant.objects.get(pk=lot.pk), credits=credits, actor=STAFF, reference="prop", now=self.now
        )
        self._settled(index, **SETTLES)
        assert taken == self.accounts[index].clawback(lot, credits, self.now)
        assert self._lot_entries(lot, LedgerEntry.Kind.CLAWBACK) == before - taken

    @precondition(lambda self: any(acct.lots for acct in self.accounts))
    @rule(pick=pick, open_only=open_only)
    def void(self, pick: int, open_only: bool) -> None:
        index, lot = self._pick_lot(pick, open_only)
        before = self._lot_entries(lot, LedgerEntry.Kind.VOID)

        def void() -> int:
            return grant_void(grant=Grant.objects.get(pk=lot.pk), actor=STAFF, reason="property test", now=self.now)

        if (refusal := self.accounts[index].void_refusal(lot)) is not None:
            self._expect_refusal(index, refusal, void)
            return
        voided = void()
        self._settled(index, **SETTLES)
        assert voided == self.accounts[index].void(lot, self.now)
        assert self._lot_entries(lot, LedgerEntry.Kind.VOID) == before - voided

    # -- rules: accounts -------------------------------------------------------------------

    @rule(pick=account_pick, suspended=suspend)
    def set_status(self, pick: int, suspended: bool) -> None:
        self._set_status(self._index(pick), suspended=suspended)

    def _set_status(self, index: int, *, suspended: bool) -> None:
        """Suspend or reactivate, as an operator does (no service for it yet: a plain update)."""
        status = Account.Status.SUSPENDED if suspended else Account.Status.ACTIVE
        Account.objects.filter(pk=self.accounts[index].pk).update(status=status)
        self.objs[index].status = status
        self.accounts[index].suspended = suspended

    @precondition(lambda self: len(self.accounts) < MAX_ACCOUNTS)
    @rule(day=st.sampled_from([None, None, 1, 28, 29, 30, 31]), second=st.integers(0, DAY - 1), suspended=suspend)
    def open_account(self, day: int | None, second: int, suspended: bool) -> None:
        """Open an account with free credits now, or first move the clock to a day of the month
        (29th-31st anchor on the 28th); sometimes suspend it at once, before any free grant."""
        if day is not None:
            self._move_clock(next_day_of_month(self.now, day, second))
        index = self._open(free=True)
        if suspended:
            self._set_status(index, suspended=True)

    # -- rules: settling, sweeps and the clock ---------------------------------------------

    @rule(pick=account_pick, like_the_api=st.booleans())
    def settle(self, pick: int, like_the_api: bool) -> None:
        """Settle the account; or read its balance as the API does, settling only if it must."""
        index = self._index(pick)
        acct = self.accounts[index]
        account = Account.objects.get(pk=acct.pk)
        if like_the_api:
            unsettled = [h for h in acct.holds if h.state == LAPSED and self._db_hold_status(h) == PENDING]
            due = acct.free_grant_due(self.now) is not None
            # The balance read's statement steps aside (None) for an account with something to
            # settle: a lapsed hold still pending, or the free grant due.
            assert (balance_json(acct.public_id, self.now) is None) == (bool(unsettled) or due)
            if not unsettled and not due:
                self.wrote = False
                return
        account = account_settle(account=account, actor=Actor.system("property_test"), now=self.now)
        self._settled(index, **SETTLES)
        # Settled, the balance is exactly the model's.
        balance = balance_get(account=account, now=self.now)
        assert balance.available == acct.spendable(self.now)
        assert balance.held == acct.held()

    @rule(job=st.sampled_from(["holds", "grants", "refill"]))
    def sweep(self, job: str) -> None:
        everyone = range(len(self.accounts))
        if job == "holds":
            lapsed = Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lte=self.now)
            due = lapsed.count()
            assert holds_expire_due(now=self.now) == due
            assert not lapsed.exists()
            for index in everyone:
                self._settled(index, holds=True)
        elif job == "grants":
            lapsed = Grant.objects.filter(expires_at__lte=self.now)
            with_credits, all_lapsed = lapsed.filter(remaining__gt=0).count(), lapsed.count()
            # Lots that still carry credits are certainly expired by the sweep; an empty lot
            # that a lapsed hold refills while the sweep settles its account may count as well.
            assert with_credits <= grants_expire_due(now=self.now) <= all_lapsed
            assert not lapsed.filter(remaining__gt=0).exists()
            for index in everyone:
                self._settled(index, lots=True)
        else:
            due = [d for d in (acct.free_grant_due(self.now) for acct in self.accounts) if d and d.credits]
            result = job_run_inline(job=JobRun.Job.REFILL, now=self.now)
            assert (result.rows, result.credits) == (len(due), sum(d.credits for d in due))
            for index in everyone:
                self._settled(index, free=True)

    @rule(seconds=clock_step)
    def advance_clock(self, seconds: int) -> None:
        self._move_clock(self.now + timedelta(seconds=seconds))
        self.wrote = False

    @rule(pick=pick, nudge=st.sampled_from([-1, 0, 0, 1]))
    def advance_clock_to_a_boundary(self, pick: int, nudge: int) -> None:
        """Land on (or a second either side of) a lot's or hold's expiry or the next free period
        start of an account, where `<=` matters."""
        instants = {lot.expires_at for acct in self.accounts for lot in acct.lots if lot.expires_at is not None}
        instants |= {hold.expires_at for hold in self.holds}
        for plan in (acct.plan for acct in self.accounts if acct.plan is not None):
            start = plan.next_start_after(self.now)
            instants |= {start, plan.next_start_after(start)}
        targets = sorted(t + timedelta(seconds=nudge) for t in instants if t + timedelta(seconds=nudge) > self.now)
        if targets:
            self._move_clock(targets[pick % len(targets)])
        self.wrote = False

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def ledger_invariants_hold(self) -> None:
        # The ledger checks read no clock, so after a step that only moved the clock they would
        # re-check unchanged rows: skip them then (they are most of the test's run time).
        wrote, self.wrote = self.wrote, True
        if not wrote:
            return
        breaches = ledger_breaches()
        assert breaches == [], "\n".join(map(str, breaches))

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        # The rows of every account in four queries (holds, lots, new entries, accounts), then
        # each account's balance as the API reads it.
        pks = [acct.pk for acct in self.accounts]
        holds: dict[int, dict[int, tuple[str, int]]] = {pk: {} for pk in pks}
        for pk, account_id, status, captured in Hold.objects.filter(account_id__in=pks).values_list(
            "pk", "account_id", "status", "captured_credits"
        ):
            holds[account_id][pk] = (status, captured)
        lots: dict[int, dict[int, int]] = {pk: {} for pk in pks}
        for pk, account_id, remaining in Grant.objects.filter(account_id__in=pks).values_list(
            "pk", "account_id", "remaining"
        ):
            lots[account_id][pk] = remaining
        self._check_running_balances(pks)
        rows = Account.objects.in_bulk(pks)  # fresh, as a request would read them
        for index, acct in enumerate(self.accounts):
            unsettled = self._check_holds(index, holds[acct.pk])
            self._check_lots(index, lots[acct.pk])
            self._check_balance(index, rows[acct.pk], unsettled)

    def _check_balance(self, index: int, account: Account, unsettled: list[ModelHold]) -> None:
        """The balance (lots in spend order, available, free, paid, held) is the model's."""
        acct = self.accounts[index]
        assert account.available_credits >= 0 and account.held_credits >= 0
        assert account.is_suspended == acct.suspended
        # Lapsed holds the database has not settled yet still hold their credits there.
        still_held: dict[int, int] = {}
        for hold in unsettled:
            for lot, part in hold.allocations:
                still_held[lot.pk] = still_held.get(lot.pk, 0) + part
        expected_lots = [
            (lot, lot.remaining - still_held.get(lot.pk, 0))
            for lot in sorted(acct.lots, key=Lot.spend_key)
            if not lot.expired(self.now)
        ]
        expected_lots = [(lot, remaining) for lot, remaining in expected_lots if remaining > 0]
        expected_available = sum(remaining for _, remaining in expected_lots)
        expected_paid = sum(remaining for lot, remaining in expected_lots if lot.paid)
        expected_held = acct.held() + sum(h.credits for h in unsettled)

        balance = balance_get(account=account, now=self.now)
        assert [(g.pk, g.remaining) for g in balance.grants] == [(lot.pk, n) for lot, n in expected_lots], (
            f"account {index}: unexpired lots, their credits or their spend order differ"
        )
        assert balance.available == expected_available >= 0
        assert balance.paid == expected_paid and balance.free == expected_available - expected_paid
        assert balance.held == expected_held == account.held_credits
        # Expired-but-unswept lots may still carry credits in the cached balance, never fewer.
        # (That the cached balance is what the lots hold is one of the ledger_breaches checks.)
        assert account.available_credits >= balance.available

    def _check_holds(self, index: int, found: dict[int, tuple[str, int]]) -> list[ModelHold]:
        """Hold rows agree with the model; returns the lapsed holds the database still has pending."""
        acct = self.accounts[index]
        assert set(found) == {h.pk for h in acct.holds}, f"account {index}: holds appeared or vanished"
        unsettled = []
        for hold in acct.holds:
            status, captured = found[hold.pk]
            assert status in DB_STATUSES[hold.state], f"hold {hold.pk}: model {hold.state}, database {status}"
            assert captured == hold.captured
            if hold.state == LAPSED and status == PENDING:
                unsettled.append(hold)
        return unsettled

    def _check_lots(self, index: int, left: dict[int, int]) -> None:
        """The account has exactly the model's lots, and expired ones never gain credits.

        Credits given back to a lot that has expired (a release, a partial capture's rest, a
        refund, a lapsed hold) expire at once: what an expired lot shows can only go down, and
        once the account has settled its lots at this instant, it shows none.
        """
        acct = self.accounts[index]
        assert set(left) == {lot.pk for lot in acct.lots}, (
            f"account {index}: lots {sorted(set(left) - {lot.pk for lot in acct.lots})} appeared, "
            f"{sorted({lot.pk for lot in acct.lots} - set(left))} vanished"
        )
        settled_now = self.lots_settled_at.get(index) == self.now
        for lot in acct.lots:
            if lot.expired(self.now):
                before = self.expired_left.get(lot.pk, left[lot.pk])
                assert left[lot.pk] <= before, f"expired lot {lot.pk} went from {before} to {left[lot.pk]} credits"
                assert not settled_now or left[lot.pk] == 0, f"expired lot {lot.pk} still holds credits after a settle"
                self.expired_left[lot.pk] = left[lot.pk]

    def _check_running_balances(self, pks: list[int]) -> None:
        """Each entry's balance_after / held_after is the running total of its account's entries up to it.

        ledger_breaches compares sums only; this catches a writer (the set-based sweeps in SQL
        among them) that records the right movements with wrong running balances or out of order.
        Entries are append-only, so each check reads only the entries written since the last.
        """
        new = LedgerEntry.objects.filter(account_id__in=pks, id__gt=self.last_entry).order_by("id")
        for pk, account_id, credits, held_credits, after, held_after in new.values_list(
            "pk", "account_id", "credits", "held_credits", "balance_after", "held_after"
        ):
            available, held = self.running.get(account_id, (0, 0))
            available, held = available + credits, held + held_credits
            assert (after, held_after) == (available, held), (
                f"entry {pk}: balance_after/held_after {after}/{held_after}, running totals {available}/{held}"
            )
            self.running[account_id] = (available, held)
            self.last_entry = pk


# 2,400 steps: about a minute on an idle 2-core machine (a minute and a half while other test
# runs share it), and enough to reach lapsed lots, free grants of later periods and lapsed holds
# dozens of times in every run (MUST_REACH checks that it did). A failure is found in seconds,
# but shrinking replays whole examples against PostgreSQL and Hypothesis allows it up to five
# minutes before it reports: the longer timeout lets it finish and print the failing steps.
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.timeout(900)
def test_random_ledger_operations_keep_every_invariant_and_match_the_model():
    REACHED.clear()
    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
    # A run that never reached these proved nothing about them: that is a failure too.
    missing = [what for what in MUST_REACH if not REACHED[what]]
    assert not missing, f"the run never reached {missing}; it reached {dict(REACHED)}"

"""The ledger services: spend order, expiry, holds, refunds, and the append-only ledger.

Every service call passes an explicit `now`, so each test states the exact second it acts at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from accounts.models import Account
from billing.errors import AccountSuspended, DebitAlreadyRefunded, HoldNotPending, InsufficientCredits
from billing.models import Grant, Hold, LedgerEntry
from billing.selectors import balance_get
from billing.services.jobs import grants_expire_due, holds_expire_due
from billing.services.ledger import (
    Actor,
    debit_create,
    debit_refund,
    grant_void,
    hold_capture,
    hold_create,
    hold_release,
)
from billing.signup import user_signup
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 10, 12, 0, 0, tzinfo=UTC)
SVC = Actor("service", "1")
S = timedelta(seconds=1)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def remaining(grant: Grant) -> int:
    grant.refresh_from_db(fields=["remaining"])
    return grant.remaining


def cached(account: Account) -> tuple[int, int]:
    account.refresh_from_db(fields=["available_credits", "held_credits"])
    return account.available_credits, account.held_credits


def debit_parts(debit) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(grant id, credits taken) for each lot the debit charged, in the order charged."""
    return [(e.grant_id, -e.credits) for e in LedgerEntry.objects.filter(debit=debit, kind="debit").order_by("id")]


def hold_parts(hold: Hold) -> list[tuple[int, int]]:
    return [(e.grant_id, -e.credits) for e in LedgerEntry.objects.filter(hold=hold, kind="hold").order_by("id")]


def entries(account: Account, **filters: object) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account=account, **filters).order_by("id"))


def assert_running_balances(account: Account) -> None:
    """balance_after and held_after of every entry are the running sums of the entries so far."""
    available = held = 0
    rows = entries(account)
    assert rows, "expected ledger entries"
    for entry in rows:
        available += entry.credits
        held += entry.held_credits
        assert (entry.balance_after, entry.held_after) == (available, held), (
            f"entry {entry.id} {entry.kind}: after=({entry.balance_after}, {entry.held_after}), "
            f"running=({available}, {held})"
        )
    assert cached(account) == (available, held)


@pytest.fixture
def acct() -> Account:
    return make_account(now=T0)


# --- Spend order -------------------------------------------------------------------------------


def test_spend_order_is_earliest_expiry_then_priority_then_never_expiring_last(assert_ledger_clean):
    user = user_signup(email="order@example.com", password="correct-horse-battery", now=T0)
    account = Account.objects.get(user=user)
    free = Grant.objects.get(account=account, source=Grant.Source.FREE_MONTHLY)
    assert free.amount == 50 and free.expires_at is not None
    # A promo expiring with the free credits: same expiry, so priority decides (free 10 < promo 20).
    promo_same = give(account, 5, source=Grant.Source.PROMO, expires_at=free.expires_at, now=T0)
    # A promo expiring a day before the free credits goes first, whatever its priority.
    promo_early = give(
        account, 7, source=Grant.Source.PROMO, expires_at=free.expires_at - timedelta(days=1), priority=999, now=T0
    )
    paid = give(account, 115, source=Grant.Source.PURCHASE, expires_at=T0 + timedelta(days=365), now=T0)
    # Never-expiring goes last even with the lowest priority number of all.
    forever = give(account, 10, priority=0, now=T0)

    debit = debit_create(account=account, credits=7 + 50 + 5 + 115 + 3, actor=SVC, now=at(60))

    assert debit_parts(debit) == [
        (promo_early.pk, 7),
        (free.pk, 50),
        (promo_same.pk, 5),
        (paid.pk, 115),
        (forever.pk, 3),
    ]
    assert [remaining(g) for g in (promo_early, free, promo_same, paid, forever)] == [0, 0, 0, 0, 7]
    assert_running_balances(account)
    assert_ledger_clean()


def test_free_credits_are_spent_before_paid_credits_one_debit_at_a_time(assert_ledger_clean):
    user = user_signup(email="freefirst@example.com", password="correct-horse-battery", now=T0)
    account = Account.objects.get(user=user)
    free = Grant.objects.get(account=account, source=Grant.Source.FREE_MONTHLY)
    paid = give(account, 115, source=Grant.Source.PURCHASE, expires_at=T0 + timedelta(days=365), now=T0)

    for i in range(50):
        debit = debit_create(account=account, credits=1, actor=SVC, now=at(60 + i))
        assert debit_parts(debit) == [(free.pk, 1)]
    debit = debit_create(account=account, credits=1, actor=SVC, now=at(200))
    assert debit_parts(debit) == [(paid.pk, 1)]
    assert (remaining(free), remaining(paid)) == (0, 114)
    balance = balance_get(account=account, now=at(200))
    assert (balance.free, balance.paid, balance.available) == (0, 114, 114)
    assert_ledger_clean()


def test_same_expiry_lots_are_spent_lower_priority_first(acct, assert_ledger_clean):
    expires = T0 + timedelta(days=30)
    high = give(acct, 4, expires_at=expires, priority=70, now=T0)
    low = give(acct, 4, expires_at=expires, priority=5, now=at(1))

    debit = debit_create(account=acct, credits=5, actor=SVC, now=at(10))

    assert debit_parts(debit) == [(low.pk, 4), (high.pk, 1)]
    assert_ledger_clean()


def test_equal_lots_are_spent_in_the_order_they_were_made_whatever_their_clock_says(acct, assert_ledger_clean):
    # The spend order's last key is the lot's id, as in the spendable index: the lot made first
    # is the older one, even when the application's clock stamped it later.
    made_first = give(acct, 3, now=at(100))
    made_second = give(acct, 3, now=at(50))

    debit = debit_create(account=acct, credits=4, actor=SVC, now=at(200))

    assert made_first.pk < made_second.pk
    assert debit_parts(debit) == [(made_first.pk, 3), (made_second.pk, 1)]
    assert_ledger_clean()


# --- Expiry -----------------------------------------------------------------------------------


def test_an_expired_lot_is_skipped_from_the_exact_second_it_expires(acct, assert_ledger_clean):
    expiring = give(acct, 5, expires_at=at(60), now=T0)
    forever = give(acct, 5, now=T0)

    one_second_before = debit_create(account=acct, credits=1, actor=SVC, now=at(59))
    assert debit_parts(one_second_before) == [(expiring.pk, 1)]

    on_the_second = debit_create(account=acct, credits=1, actor=SVC, now=at(60))
    assert debit_parts(on_the_second) == [(forever.pk, 1)]
    # The debit settled the lapsed lot first: its last 4 credits were written off.
    expire = entries(acct, kind="expire")
    assert [(e.grant_id, e.credits) for e in expire] == [(expiring.pk, -4)]
    assert (remaining(expiring), remaining(forever)) == (0, 4)
    assert cached(acct) == (4, 0)
    assert_running_balances(acct)
    assert_ledger_clean()


def test_a_debit_at_the_second_of_expiry_is_refused_when_only_the_expired_lot_had_credits(acct, assert_ledger_clean):
    give(acct, 5, expires_at=at(60), now=T0)

    with pytest.raises(InsufficientCredits) as exc:
        debit_create(account=acct, credits=1, actor=SVC, now=at(60))

    assert exc.value.details == {"available": 0, "requested": 1}
    assert_ledger_clean()


def test_a_hold_at_the_second_of_expiry_cannot_reserve_the_expired_lot(acct, assert_ledger_clean):
    give(acct, 5, expires_at=at(60), now=T0)
    forever = give(acct, 2, now=T0)

    with pytest.raises(InsufficientCredits) as exc:
        hold_create(account=acct, credits=3, expires_in=60, actor=SVC, now=at(60))
    assert exc.value.details == {"available": 2, "requested": 3}

    hold = hold_create(account=acct, credits=2, expires_in=60, actor=SVC, now=at(60))
    assert hold_parts(hold) == [(forever.pk, 2)]
    assert_ledger_clean()


def test_balance_excludes_expired_credit_before_any_sweep(acct, assert_ledger_clean):
    expiring = give(acct, 5, source=Grant.Source.PURCHASE, expires_at=at(60), now=T0)
    forever = give(acct, 3, now=T0)

    before = balance_get(account=acct, now=at(59))
    assert (before.available, before.paid, before.free) == (8, 5, 3)
    assert [g.pk for g in before.grants] == [expiring.pk, forever.pk]

    after = balance_get(account=acct, now=at(60))
    assert (after.available, after.paid, after.free) == (3, 0, 3)
    assert [g.pk for g in after.grants] == [forever.pk]
    # Nothing has swept the lot yet: no expire entry, and the cached balance still counts it.
    assert entries(acct, kind="expire") == []
    assert cached(acct) == (8, 0)
    assert_ledger_clean()


def test_balance_api_excludes_expired_credit_before_any_sweep(api, acct, assert_ledger_clean):
    give(acct, 5, source=Grant.Source.PURCHASE, expires_at=at(60), now=T0)
    give(acct, 3, now=T0)

    with time_machine.travel(at(60), tick=False):
        body = api.get(f"/accounts/{acct.public_id}/balance").json()

    assert (body["available"], body["paid"], body["free"]) == (3, 0, 3)
    assert [g["remaining"] for g in body["grants"]] == [3]
    assert_ledger_clean()


def test_a_grant_created_already_expired_is_expired_at_once(acct, assert_ledger_clean):
    grant = give(acct, 5, expires_at=at(0), now=at(0))

    assert [(e.kind, e.credits) for e in entries(acct, grant=grant)] == [("grant", 5), ("expire", -5)]
    assert remaining(grant) == 0
    assert cached(acct) == (0, 0)
    assert_ledger_clean()


def test_grants_expire_due_writes_expire_entries_once(acct, assert_ledger_clean):
    emptied = give(acct, 2, expires_at=at(60), now=T0)
    lapsing = give(acct, 5, expires_at=at(60), now=at(1))
    later = give(acct, 4, expires_at=at(120), now=T0)
    debit_create(account=acct, credits=2, actor=SVC, now=at(10))  # the older of the two lapsing lots
    assert (remaining(emptied), remaining(lapsing), remaining(later)) == (0, 5, 4)
    other = make_account(now=T0)
    other_lapsing = give(other, 6, expires_at=at(60), now=T0)

    assert grants_expire_due(now=at(59)) == 0
    assert LedgerEntry.objects.filter(kind="expire").count() == 0

    # One lot in each account still holds credits; the emptied lot needs no entry.
    assert grants_expire_due(now=at(60)) == 2

    assert [(e.grant_id, e.credits, e.actor_type, e.actor_id) for e in entries(acct, kind="expire")] == [
        (lapsing.pk, -5, "system", "grant_expiry")
    ]
    assert [(e.grant_id, e.credits) for e in entries(other, kind="expire")] == [(other_lapsing.pk, -6)]
    assert (remaining(lapsing), remaining(other_lapsing), remaining(later)) == (0, 0, 4)
    assert cached(acct) == (4, 0) and cached(other) == (0, 0)

    count = LedgerEntry.objects.count()
    assert grants_expire_due(now=at(60)) == 0
    assert grants_expire_due(now=at(61)) == 0
    assert LedgerEntry.objects.count() == count
    assert_running_balances(acct)
    assert_running_balances(other)
    assert_ledger_clean()


# --- Holds -------------------------------------------------------------------------------------


def test_a_hold_reduces_available_and_raises_held(acct, assert_ledger_clean):
    grant = give(acct, 10, now=T0)

    hold = hold_create(account=acct, credits=3, expires_in=900, actor=SVC, reference="gen-1", now=at(1))

    assert hold.status == Hold.Status.PENDING and hold.expires_at == at(901)
    assert cached(acct) == (7, 3)
    assert (acct.available_credits, acct.held_credits) == (7, 3)  # the caller's object is refreshed too
    balance = balance_get(account=acct, now=at(2))
    assert (balance.available, balance.held) == (7, 3)
    assert [(e.kind, e.credits, e.held_credits, e.grant_id) for e in entries(acct, hold=hold)] == [
        ("hold", -3, 3, grant.pk)
    ]
    assert remaining(grant) == 7
    assert_running_balances(acct)
    assert_ledger_clean()


def test_capturing_a_whole_hold_charges_it_all(acct, assert_ledger_clean):
    grant = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=3, expires_in=900, actor=SVC, now=at(1))

    captured = hold_capture(hold=hold, actor=SVC, now=at(2))

    assert (captured.status, captured.captured_credits, captured.settled_at) == (Hold.Status.CAPTURED, 3, at(2))
    assert cached(acct) == (7, 0)
    assert remaining(grant) == 7
    assert [(e.kind, e.credits, e.held_credits) for e in entries(acct, hold=hold)] == [
        ("hold", -3, 3),
        ("capture", 0, -3),
    ]
    with pytest.raises(HoldNotPending):
        hold_capture(hold=hold, actor=SVC, now=at(3))
    with pytest.raises(HoldNotPending):
        hold_release(hold=hold, actor=SVC, now=at(3))
    assert_running_balances(acct)
    assert_ledger_clean()


def test_capturing_part_of_a_hold_charges_lots_in_the_order_held_and_returns_the_rest(acct, assert_ledger_clean):
    first = give(acct, 2, expires_at=T0 + timedelta(days=30), now=T0)
    second = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=5, expires_in=900, actor=SVC, now=at(1))
    assert hold_parts(hold) == [(first.pk, 2), (second.pk, 3)]

    captured = hold_capture(hold=hold, credits=3, actor=SVC, now=at(2))

    assert (captured.status, captured.captured_credits) == (Hold.Status.CAPTURED, 3)
    # 3 charged: both of `first`, then 1 of `second`; the other 2 go back to `second`.
    assert (remaining(first), remaining(second)) == (0, 9)
    settled = entries(acct, hold=hold, kind__in=["capture", "release"])
    assert [(e.kind, e.grant_id, e.credits, e.held_credits) for e in settled] == [
        ("capture", None, 0, -3),
        ("release", second.pk, 2, -2),
    ]
    assert cached(acct) == (9, 0)
    assert_running_balances(acct)
    assert_ledger_clean()


def test_capturing_zero_credits_returns_everything(acct, assert_ledger_clean):
    grant = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=4, expires_in=900, actor=SVC, now=at(1))

    captured = hold_capture(hold=hold, credits=0, actor=SVC, now=at(2))

    assert (captured.status, captured.captured_credits) == (Hold.Status.CAPTURED, 0)
    assert remaining(grant) == 10 and cached(acct) == (10, 0)
    assert_ledger_clean()


def test_releasing_a_hold_returns_all_credits_to_their_lots(acct, assert_ledger_clean):
    first = give(acct, 2, expires_at=T0 + timedelta(days=30), now=T0)
    second = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=5, expires_in=900, actor=SVC, now=at(1))

    released = hold_release(hold=hold, actor=SVC, now=at(2))

    assert (released.status, released.captured_credits, released.settled_at) == (Hold.Status.RELEASED, 0, at(2))
    assert (remaining(first), remaining(second)) == (2, 10)
    assert [(e.grant_id, e.credits, e.held_credits) for e in entries(acct, hold=hold, kind="release")] == [
        (first.pk, 2, -2),
        (second.pk, 3, -3),
    ]
    assert cached(acct) == (12, 0)
    with pytest.raises(HoldNotPending):
        hold_release(hold=hold, actor=SVC, now=at(3))
    assert_running_balances(acct)
    assert_ledger_clean()


def test_capturing_after_the_hold_expired_releases_it_and_returns_status_expired(acct, assert_ledger_clean):
    grant = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=4, expires_in=60, actor=SVC, now=T0)

    result = hold_capture(hold=hold, actor=SVC, now=at(60))  # the exact second it expires

    assert (result.status, result.captured_credits, result.settled_at) == (Hold.Status.EXPIRED, 0, at(60))
    hold.refresh_from_db()
    assert hold.status == Hold.Status.EXPIRED
    assert remaining(grant) == 10 and cached(acct) == (10, 0)
    assert [e.kind for e in entries(acct, hold=hold)] == ["hold", "release"]
    assert entries(acct, kind="capture") == []
    assert_running_balances(acct)
    assert_ledger_clean()


def test_capture_api_after_expiry_answers_hold_expired_and_keeps_the_release(api, acct, assert_ledger_clean):
    give(acct, 10, now=T0)
    with time_machine.travel(T0, tick=False):
        created = api.post(f"/accounts/{acct.public_id}/holds", {"credits": 4, "reference": "gen", "expires_in": 60})
    assert created.status_code == 201, created.json()

    with time_machine.travel(at(60), tick=False):
        response = api.post(f"/holds/{created.json()['id']}/capture", {})

    assert response.status_code == 409, response.json()
    assert response.json()["error"]["code"] == "hold_expired"
    hold = Hold.objects.get(public_id=created.json()["id"])
    assert (hold.status, hold.captured_credits) == (Hold.Status.EXPIRED, 0)
    assert cached(acct) == (10, 0)  # the release committed with the refusal
    assert_ledger_clean()


def test_releasing_a_hold_after_its_expiry_settles_it_as_expired(acct, assert_ledger_clean):
    give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=4, expires_in=60, actor=SVC, now=T0)

    result = hold_release(hold=hold, actor=SVC, now=at(61))

    assert result.status == Hold.Status.EXPIRED
    assert cached(acct) == (10, 0)
    assert_ledger_clean()


def test_capturing_one_second_before_expiry_still_captures(acct, assert_ledger_clean):
    give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=4, expires_in=60, actor=SVC, now=T0)

    result = hold_capture(hold=hold, actor=SVC, now=at(59))

    assert (result.status, result.captured_credits) == (Hold.Status.CAPTURED, 4)
    assert cached(acct) == (6, 0)
    assert_ledger_clean()


def test_credits_released_to_a_lot_that_expired_meanwhile_expire_at_once(acct, assert_ledger_clean):
    short = give(acct, 3, expires_at=at(100), now=T0)
    forever = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=5, expires_in=900, actor=SVC, now=T0)
    assert hold_parts(hold) == [(short.pk, 3), (forever.pk, 2)]

    hold_release(hold=hold, actor=SVC, now=at(200))

    assert [(e.kind, e.grant_id, e.credits, e.held_credits) for e in entries(acct, kind__in=["release", "expire"])] == [
        ("release", short.pk, 3, -3),
        ("expire", short.pk, -3, 0),
        ("release", forever.pk, 2, -2),
    ]
    assert (remaining(short), remaining(forever)) == (0, 10)
    assert cached(acct) == (10, 0)
    assert_running_balances(acct)
    assert_ledger_clean()


def test_partial_capture_rest_returned_to_a_lapsed_lot_expires_at_once(acct, assert_ledger_clean):
    short = give(acct, 3, expires_at=at(100), now=T0)
    forever = give(acct, 10, now=T0)
    hold = hold_create(account=acct, credits=5, expires_in=900, actor=SVC, now=T0)

    hold_capture(hold=hold, credits=1, actor=SVC, now=at(200))

    # 1 charged from `short`; its other 2 come back and expire; `forever` gets its 2 back.
    assert [(e.kind, e.grant_id, e.credits) for e in entries(acct, kind__in=["release", "expire"])] == [
        ("release", short.pk, 2),
        ("expire", short.pk, -2),
        ("release", forever.pk, 2),
    ]
    assert (remaining(short), remaining(forever)) == (0, 10)
    assert cached(acct) == (10, 0)
    assert_running_balances(acct)
    assert_ledger_clean()


def test_holds_expire_due_releases_lapsed_holds_once(acct, assert_ledger_clean):
    short = give(acct, 3, expires_at=at(100), now=T0)
    forever = give(acct, 10, now=T0)
    lapsing = hold_create(account=acct, credits=5, expires_in=300, actor=SVC, now=T0)
    lasting = hold_create(account=acct, credits=1, expires_in=3600, actor=SVC, now=T0)
    other = make_account(now=T0)
    give(other, 4, now=T0)
    other_hold = hold_create(account=other, credits=4, expires_in=300, actor=SVC, now=T0)

    assert holds_expire_due(now=at(299)) == 0
    assert entries(acct, kind="release") == []

    assert holds_expire_due(now=at(300)) == 2

    for hold in (lapsing, other_hold):
        hold.refresh_from_db()
        assert (hold.status, hold.settled_at) == (Hold.Status.EXPIRED, at(300))
    lasting.refresh_from_db()
    assert lasting.status == Hold.Status.PENDING
    released = entries(acct, hold=lapsing, kind="release")
    assert [(e.grant_id, e.credits, e.actor_type, e.actor_id) for e in released] == [
        (short.pk, 3, "system", "hold_timeouts"),
        (forever.pk, 2, "system", "hold_timeouts"),
    ]
    # `short` lapsed at 100, so what came back to it expired with it.
    assert [(e.grant_id, e.credits) for e in entries(acct, kind="expire")] == [(short.pk, -3)]
    assert (remaining(short), remaining(forever)) == (0, 9)
    assert cached(acct) == (9, 1)
    assert cached(other) == (4, 0)

    count = LedgerEntry.objects.count()
    assert holds_expire_due(now=at(300)) == 0
    assert holds_expire_due(now=at(301)) == 0
    assert LedgerEntry.objects.count() == count
    assert_running_balances(acct)
    assert_running_balances(other)
    assert_ledger_clean()


def test_a_lapsed_hold_is_released_before_the_next_spend(acct, assert_ledger_clean):
    give(acct, 5, now=T0)
    hold = hold_create(account=acct, credits=5, expires_in=60, actor=SVC, now=T0)

    debit_create(account=acct, credits=5, actor=SVC, now=at(60))

    hold.refresh_from_db()
    assert hold.status == Hold.Status.EXPIRED
    assert cached(acct) == (0, 0)
    assert_running_balances(acct)
    assert_ledger_clean()


# --- Refunds ----------------------------------------------------------------------------------


def test_refunding_a_debit_returns_credits_to_their_lots_once(acct, assert_ledger_clean):
    first = give(acct, 5, expires_at=T0 + timedelta(days=30), now=T0)
    second = give(acct, 10, now=T0)
    debit = debit_create(account=acct, credits=7, actor=SVC, reference="gen-9", now=at(1))
    assert (remaining(first), remaining(second)) == (0, 8)

    refunded = debit_refund(debit=debit, actor=SVC, now=at(2))

    assert refunded.refunded_at == at(2)
    debit.refresh_from_db()
    assert debit.refunded_at == at(2) and debit.status == "refunded"
    assert (remaining(first), remaining(second)) == (5, 10)
    refunds = entries(acct, debit=debit, kind="refund")
    assert [(e.grant_id, e.credits) for e in refunds] == [(first.pk, 5), (second.pk, 2)]
    assert cached(acct) == (15, 0)

    count = LedgerEntry.objects.count()
    with pytest.raises(DebitAlreadyRefunded):
        debit_refund(debit=debit, actor=SVC, now=at(3))
    assert LedgerEntry.objects.count() == count
    debit.refresh_from_db()
    assert debit.refunded_at == at(2)
    assert_running_balances(acct)
    assert_ledger_clean()


def test_refunded_credits_of_a_lot_that_expired_meanwhile_expire_at_once(acct, assert_ledger_clean):
    short = give(acct, 5, expires_at=at(100), now=T0)
    forever = give(acct, 10, now=T0)
    debit = debit_create(account=acct, credits=7, actor=SVC, now=at(1))

    debit_refund(debit=debit, actor=SVC, now=at(200))

    assert [(e.kind, e.grant_id, e.credits) for e in entries(acct, kind__in=["refund", "expire"])] == [
        ("refund", short.pk, 5),
        ("expire", short.pk, -5),
        ("refund", forever.pk, 2),
    ]
    assert (remaining(short), remaining(forever)) == (0, 10)
    assert cached(acct) == (10, 0)
    assert_running_balances(acct)
    assert_ledger_clean()


# --- Refusals ---------------------------------------------------------------------------------


def test_a_suspended_account_can_neither_debit_nor_hold(assert_ledger_clean):
    account = make_account(now=T0, status=Account.Status.SUSPENDED)
    give(account, 10, now=T0)
    count = LedgerEntry.objects.count()

    with pytest.raises(AccountSuspended):
        debit_create(account=account, credits=1, actor=SVC, now=at(1))
    with pytest.raises(AccountSuspended):
        hold_create(account=account, credits=1, expires_in=60, actor=SVC, now=at(1))

    assert LedgerEntry.objects.count() == count
    assert not Hold.objects.filter(account=account).exists()
    assert cached(account) == (10, 0)
    assert_ledger_clean()


def test_insufficient_credits_carries_available_and_requested(acct, assert_ledger_clean):
    give(acct, 10, now=T0)
    give(acct, 50, expires_at=at(30), now=T0)  # lapsed by the time of the spends below
    hold_create(account=acct, credits=3, expires_in=900, actor=SVC, now=at(1))  # takes from the 50 first
    count = LedgerEntry.objects.count()

    with pytest.raises(InsufficientCredits) as debit_exc:
        debit_create(account=acct, credits=11, actor=SVC, now=at(60))
    with pytest.raises(InsufficientCredits) as hold_exc:
        hold_create(account=acct, credits=12, expires_in=60, actor=SVC, now=at(60))

    assert debit_exc.value.details == {"available": 10, "requested": 11}
    assert hold_exc.value.details == {"available": 10, "requested": 12}
    # A refused spend takes nothing; settling what lapsed is the clock's work and is kept: the
    # lapsed lot's expiry is the one entry written.
    assert list(LedgerEntry.objects.order_by("id").values_list("kind", flat=True)[count:]) == ["expire"]
    debit_create(account=acct, credits=10, actor=SVC, now=at(60))
    assert cached(acct) == (0, 3)
    assert_running_balances(acct)
    assert_ledger_clean()


def test_every_entry_records_the_running_balance_through_a_mixed_history(acct, assert_ledger_clean):
    short = give(acct, 6, expires_at=at(500), now=T0)
    give(acct, 20, now=T0)
    give(acct, 4, source=Grant.Source.PURCHASE, expires_at=at(10_000), now=at(5))
    d1 = debit_create(account=acct, credits=3, actor=SVC, now=at(10))
    h1 = hold_create(account=acct, credits=5, expires_in=100, actor=SVC, now=at(20))
    h2 = hold_create(account=acct, credits=2, expires_in=1000, actor=SVC, now=at(30))
    hold_capture(hold=h2, credits=1, actor=SVC, now=at(40))
    debit_refund(debit=d1, actor=SVC, now=at(50))
    h3 = hold_create(account=acct, credits=8, expires_in=2000, actor=SVC, now=at(60))
    holds_expire_due(now=at(120))  # h1 lapses
    grants_expire_due(now=at(500))  # `short` lapses
    hold_release(hold=h3, actor=SVC, now=at(600))
    debit_create(account=acct, credits=2, actor=SVC, now=at(700))

    h1.refresh_from_db()
    assert h1.status == Hold.Status.EXPIRED
    assert remaining(short) == 0
    kinds = {e.kind for e in entries(acct)}
    assert kinds == {"grant", "debit", "hold", "capture", "release", "refund", "expire"}
    assert_running_balances(acct)
    assert_ledger_clean()


# --- The append-only ledger --------------------------------------------------------------------


# pgtrigger's Protect raises a PL/pgSQL exception (SQLSTATE P0001): psycopg 3 maps it to
# ProgrammingError (psycopg2 to InternalError); both are DatabaseError, so match that and the text.
REFUSED = "pgtrigger: Cannot update or delete rows from billing_ledgerentry table"


@pytest.fixture
def entry(acct) -> LedgerEntry:
    give(acct, 5, now=T0)
    return LedgerEntry.objects.get(account=acct)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE billing_ledgerentry SET credits = 500 WHERE id = %s",
        "UPDATE billing_ledgerentry SET reference = 'rewritten' WHERE id = %s",
        "DELETE FROM billing_ledgerentry WHERE id = %s",
    ],
)
def test_the_database_refuses_to_change_a_ledger_entry_through_raw_sql(entry, sql, assert_ledger_clean):
    assert connection.vendor == "postgresql"
    with pytest.raises(DatabaseError, match=REFUSED):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [entry.pk])

    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (stored.credits, stored.reference) == (5, "")
    assert_ledger_clean()


def test_the_database_refuses_to_change_a_ledger_entry_through_the_orm(entry, assert_ledger_clean):
    attempts = [
        lambda: LedgerEntry.objects.filter(pk=entry.pk).update(credits=500),
        lambda: LedgerEntry.objects.filter(pk=entry.pk).delete(),
        lambda: LedgerEntry.objects.all().delete(),
        entry.delete,
    ]

    def resave() -> None:
        entry.credits = 500
        entry.save()

    attempts.append(resave)
    for attempt in attempts:
        with pytest.raises(DatabaseError, match=REFUSED):
            with transaction.atomic():
                attempt()

    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert stored.credits == 5
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()
    assert_ledger_clean()


def test_the_refusal_holds_for_a_database_superuser(entry):
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        (is_superuser,) = cursor.fetchone()
    assert is_superuser, "this test proves the trigger binds superusers; run it as one"
    with pytest.raises(DatabaseError, match=REFUSED):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM billing_ledgerentry")
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_credits_coming_back_to_a_voided_lot_are_voided_too(assert_ledger_clean):
    account = make_account()
    promo = give(account, 20, source="promo", expires_at=timezone.now() + timedelta(days=30))  # spent first
    give(account, 5, source="adjustment", expires_at=None)
    hold = hold_create(account=account, credits=12, expires_in=600, actor=SVC)
    debit = debit_create(account=account, credits=3, actor=SVC)
    assert grant_void(grant=promo, actor=SVC, reason="issued by mistake") == 5

    hold_release(hold=hold, actor=SVC)
    debit_refund(debit=debit, actor=SVC)
    promo.refresh_from_db()
    account.refresh_from_db()
    assert (promo.remaining, promo.voided_at is not None) == (0, True)
    assert account.available_credits == 5  # only the adjustment's
    voided = LedgerEntry.objects.filter(grant=promo, kind="void").order_by("id").values_list("credits", flat=True)
    assert list(voided) == [-5, -12, -3]
    assert_ledger_clean()

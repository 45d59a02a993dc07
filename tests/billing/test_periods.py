"""Free-credit periods and the free monthly grant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from accounts.models import Account
from billing.models import BillingPolicy, Grant, LedgerEntry
from billing.policy import free_credits_for, policy_get
from billing.selectors import balance_get
from billing.services.ledger import Actor, free_grant_ensure
from billing.signup import anchor_day_for
from tests.billing.factories import make_account
from tests.billing.period_oracle import boundary_at_or_before, period_at

SYSTEM = Actor.system("free_credits")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def period_of(signup: datetime, now: datetime):  # type: ignore[no-untyped-def]
    anchor = anchor_day_for(signup, 28)
    return period_at(first_period_start=boundary_at_or_before(signup, anchor), anchor_day=anchor, now=now)


# --- Pure period arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signup", "anchor"),
    [
        (utc(2027, 1, 1, 0, 0), 1),
        (utc(2027, 1, 15, 23, 59), 15),
        (utc(2027, 1, 28, 12, 0), 28),
        (utc(2027, 1, 29, 0, 0), 28),
        (utc(2027, 1, 30, 9, 30), 28),
        (utc(2027, 1, 31, 23, 59, 59), 28),
        (utc(2028, 2, 29, 12, 0), 28),
        (utc(2027, 4, 30, 12, 0), 28),
    ],
)
def test_anchor_day_is_the_signup_day_capped_at_the_28th(signup, anchor):
    assert anchor_day_for(signup, 28) == anchor


def test_anchor_day_is_taken_in_utc():
    from zoneinfo import ZoneInfo

    # 1 Feb 00:30 in Paris is still 31 Jan in UTC.
    assert anchor_day_for(datetime(2027, 2, 1, 0, 30, tzinfo=ZoneInfo("Europe/Paris")), 28) == 28
    # 28 Feb 23:00 in New York is 1 Mar in UTC.
    assert anchor_day_for(datetime(2027, 2, 28, 23, 0, tzinfo=ZoneInfo("America/New_York")), 28) == 1


@pytest.mark.parametrize("year", [2028, 2027], ids=["leap-2028", "common-2027"])
def test_a_signup_on_january_31st_has_periods_on_the_28th_through_february(year):
    signup = utc(year, 1, 31, 15, 0)

    first = period_of(signup, signup)
    assert (first.index, first.start, first.end) == (0, utc(year, 1, 28), utc(year, 2, 28))

    just_before = period_of(signup, utc(year, 2, 27, 23, 59, 59))
    assert just_before.index == 0

    second = period_of(signup, utc(year, 2, 28))
    assert (second.index, second.start, second.end) == (1, utc(year, 2, 28), utc(year, 3, 28))
    assert period_of(signup, utc(year, 3, 1, 12)).index == 1
    if year == 2028:
        assert period_of(signup, utc(2028, 2, 29, 23, 59, 59)) == second

    third = period_of(signup, utc(year, 3, 28))
    assert (third.index, third.start, third.end) == (2, utc(year, 3, 28), utc(year, 4, 28))


def test_a_signup_on_the_15th_has_periods_from_the_15th():
    signup = utc(2027, 1, 15, 10, 0)

    assert period_of(signup, signup) == period_of(signup, utc(2027, 2, 14, 23, 59, 59))
    first = period_of(signup, signup)
    assert (first.index, first.start, first.end) == (0, utc(2027, 1, 15), utc(2027, 2, 15))
    second = period_of(signup, utc(2027, 2, 15))
    assert (second.index, second.start, second.end) == (1, utc(2027, 2, 15), utc(2027, 3, 15))
    assert period_of(signup, utc(2027, 3, 14, 23)).index == 1


def test_periods_cross_the_new_year():
    signup = utc(2027, 12, 20, 8, 0)

    first = period_of(signup, signup)
    assert (first.index, first.start, first.end) == (0, utc(2027, 12, 20), utc(2028, 1, 20))
    second = period_of(signup, utc(2028, 1, 20))
    assert (second.index, second.start, second.end) == (1, utc(2028, 1, 20), utc(2028, 2, 20))
    assert period_of(signup, utc(2028, 12, 20)).index == 12


def test_a_december_31st_signup_rolls_into_january_on_the_28th():
    signup = utc(2027, 12, 31, 23, 0)

    first = period_of(signup, signup)
    assert (first.index, first.start, first.end) == (0, utc(2027, 12, 28), utc(2028, 1, 28))
    assert period_of(signup, utc(2028, 1, 27, 23, 59, 59)).index == 0
    assert period_of(signup, utc(2028, 1, 28)).index == 1


def test_period_indices_count_up_month_by_month():
    signup = utc(2027, 5, 10, 9, 0)

    starts = []
    for months in range(14):
        moment = utc(2027 + (4 + months) // 12, (4 + months) % 12 + 1, 10, 0, 0, 1)
        period = period_of(signup, moment)
        assert period.index == months
        assert period.start <= moment < period.end
        starts.append(period.start)
    assert starts == sorted(set(starts))
    assert all(p.day == 10 and p.hour == 0 for p in starts)


def test_a_clock_before_signup_counts_as_the_first_period():
    signup = utc(2027, 5, 10, 9, 0)

    assert period_of(signup, utc(2027, 4, 1)).index == 0


@pytest.mark.django_db
def test_free_credits_are_50_in_the_first_period_and_15_after():
    policy = policy_get()
    assert free_credits_for(policy, 0) == 50
    assert [free_credits_for(policy, i) for i in (1, 2, 11, 120)] == [15, 15, 15, 15]


@pytest.mark.django_db
def test_the_policy_is_seeded_from_the_settings(settings):
    settings.FREE_CREDITS_FIRST_PERIOD = 70
    settings.FREE_CREDITS_PER_PERIOD = 5
    settings.FREE_PERIOD_LATEST_ANCHOR_DAY = 20

    policy = policy_get()

    assert (free_credits_for(policy, 0), free_credits_for(policy, 1), policy.latest_anchor_day) == (70, 5, 20)


@pytest.mark.django_db
def test_an_operator_change_to_the_policy_applies_to_the_next_grant(assert_ledger_clean):
    signup = utc(2027, 3, 5, 14, 30)
    account = make_account(now=signup, free=True)
    free_grant_ensure(account=account, actor=SYSTEM, now=signup)
    BillingPolicy.objects.filter(pk=policy_get().pk).update(free_credits_per_period=7)

    later = free_grant_ensure(account=account, actor=SYSTEM, now=utc(2027, 4, 5))

    assert later is not None and later.amount == 7
    assert Grant.objects.get(account=account, period_start=signup.replace(hour=0, minute=0)).amount == 50
    assert_ledger_clean()


@pytest.mark.django_db
def test_the_anchor_rule_comes_from_the_policy(anon):
    BillingPolicy.objects.filter(pk=policy_get().pk).update(latest_anchor_day=10)

    with time_machine.travel(utc(2027, 3, 15, 9, 0), tick=False):
        response = anon.post("/auth/signup", {"email": "late@example.com", "password": "correct-horse-battery"})

    account = Account.objects.get(public_id=response.json()["account"])
    assert (account.period_anchor_day, account.first_period_start) == (10, utc(2027, 3, 10))


# --- Signup and the free grant -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("signup", "period_start", "expires"),
    [
        (utc(2027, 3, 5, 14, 30), utc(2027, 3, 5), utc(2027, 4, 5)),
        (utc(2028, 1, 31, 15, 0), utc(2028, 1, 28), utc(2028, 2, 28)),
        (utc(2027, 12, 30, 1, 0), utc(2027, 12, 28), utc(2028, 1, 28)),
    ],
)
def test_signup_grants_50_free_credits_expiring_at_the_next_period(
    anon, signup, period_start, expires, assert_ledger_clean
):
    with time_machine.travel(signup, tick=False):
        response = anon.post("/auth/signup", {"email": "new@example.com", "password": "correct-horse-battery"})

    assert response.status_code == 201, response.json()
    balance = response.json()["balance"]
    assert (balance["available"], balance["free"], balance["paid"], balance["held"]) == (50, 50, 0, 0)
    assert len(balance["grants"]) == 1
    assert balance["grants"][0]["source"] == "free_monthly"
    assert datetime.fromisoformat(balance["grants"][0]["expires_at"]) == expires

    account = Account.objects.get(public_id=response.json()["account"])
    assert account.period_anchor_day == period_start.day
    assert account.first_period_start == period_start
    grant = Grant.objects.get(account=account)
    assert (grant.source, grant.amount, grant.remaining) == ("free_monthly", 50, 50)
    assert (grant.period_start, grant.expires_at) == (period_start, expires)

    # Usable until the last second of the period, gone on the first second of the next.
    assert balance_get(account=account, now=expires - timedelta(seconds=1)).free == 50
    assert balance_get(account=account, now=expires).free == 0
    assert_ledger_clean()


@pytest.mark.django_db
def test_free_grant_ensure_grants_once_per_period(assert_ledger_clean):
    signup = utc(2027, 3, 5, 14, 30)
    account = make_account(now=signup, free=True)

    first = free_grant_ensure(account=account, actor=SYSTEM, now=signup)
    again = free_grant_ensure(account=account, actor=SYSTEM, now=signup + timedelta(days=10))

    assert first is not None and first.amount == 50
    assert again is None
    assert list(Grant.objects.filter(account=account).values_list("amount", flat=True)) == [50]
    assert LedgerEntry.objects.filter(account=account, kind="grant").count() == 1
    account.refresh_from_db()
    assert account.available_credits == 50
    assert_ledger_clean()


@pytest.mark.django_db
def test_free_grant_ensure_gives_15_in_a_later_period(assert_ledger_clean):
    signup = utc(2027, 3, 5, 14, 30)
    account = make_account(now=signup, free=True)
    free_grant_ensure(account=account, actor=SYSTEM, now=signup)

    later = free_grant_ensure(account=account, actor=SYSTEM, now=utc(2027, 5, 5))
    repeat = free_grant_ensure(account=account, actor=SYSTEM, now=utc(2027, 6, 4, 23, 59, 59))

    assert later is not None
    assert (later.amount, later.source) == (15, "free_monthly")
    assert (later.period_start, later.expires_at) == (utc(2027, 5, 5), utc(2027, 6, 5))
    assert repeat is None
    balance = balance_get(account=account, now=utc(2027, 5, 6))
    assert (balance.free, [g.pk for g in balance.grants]) == (15, [later.pk])
    assert_ledger_clean()


@pytest.mark.django_db
def test_a_suspended_account_gets_no_free_credits(assert_ledger_clean):
    signup = utc(2027, 3, 5, 14, 30)
    account = make_account(now=signup, status=Account.Status.SUSPENDED, free=True)

    assert free_grant_ensure(account=account, actor=SYSTEM, now=signup) is None
    assert free_grant_ensure(account=account, actor=SYSTEM, now=utc(2027, 5, 5)) is None

    assert not Grant.objects.filter(account=account).exists()
    assert not LedgerEntry.objects.filter(account=account).exists()
    assert_ledger_clean()


@pytest.mark.django_db
def test_free_grant_ensure_checks_suspension_on_the_stored_account_not_the_callers_copy(assert_ledger_clean):
    signup = utc(2027, 3, 5, 14, 30)
    account = make_account(now=signup, free=True)
    Account.objects.filter(pk=account.pk).update(status=Account.Status.SUSPENDED)

    free_grant_ensure(account=account, actor=SYSTEM, now=utc(2027, 5, 5))

    assert not Grant.objects.filter(account=account).exists()
    assert_ledger_clean()

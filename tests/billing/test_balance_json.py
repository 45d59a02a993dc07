"""The balance body built by PostgreSQL (billing.selectors.balance_json) against BalanceOut.

The balance route answers with the body the database renders when the account has nothing to
settle; it must be byte for byte what the general path renders, and it must step aside exactly
when the general path would settle first.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from accounts.models import Account
from billing.models import Grant
from billing.selectors import balance_get, balance_json
from billing.serializers import BalanceOut
from billing.services.ledger import Actor, hold_create
from tests.billing.factories import give, make_account
from tests.billing.period_oracle import period_at
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def rendered(account: Account, now: datetime) -> bytes:
    account.refresh_from_db()
    return JSONRenderer().render(BalanceOut(balance_get(account=account, now=now)).data)


def test_the_body_is_byte_for_byte_the_rendered_balance(service_key):
    now = timezone.now().replace(microsecond=250_000)
    empty = make_account()
    mixed = make_account()
    give(mixed, 7, source=Grant.Source.PURCHASE, expires_at=now + timedelta(days=365), now=now)  # whole seconds
    give(mixed, 3, source=Grant.Source.PROMO, expires_at=now + timedelta(days=2, microseconds=17), now=now)
    give(mixed, 4, source=Grant.Source.ADJUSTMENT, expires_at=None, now=now)  # never expires
    give(mixed, 5, expires_at=now - timedelta(seconds=1), now=now - timedelta(days=1))  # lapsed: left out
    spent = give(mixed, 2, expires_at=now + timedelta(days=1), now=now)
    Grant.objects.filter(pk=spent.pk).update(remaining=0)  # nothing left: left out
    suspended = make_account(status=Account.Status.SUSPENDED)
    give(suspended, 6, now=now)
    Account.objects.filter(pk=suspended.pk).update(free_period_start=None)  # no free grant for it

    for account in (empty, mixed, suspended):
        body = balance_json(account.public_id, now)
        assert body is not None
        assert body.encode() == rendered(account, now)

    response = Api(service_key).get(f"/accounts/{mixed.public_id}/balance")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    later = timezone.now()
    assert response.content == rendered(mixed, later)


def test_it_steps_aside_for_an_unknown_account_a_lapsed_hold_and_a_due_free_grant():
    now = timezone.now()
    assert balance_json("acct_doesnotexist", now) is None

    holding = make_account()
    give(holding, 5)
    hold_create(account=holding, credits=2, expires_in=60, actor=Actor("service", "1"), now=now)
    assert balance_json(holding.public_id, now) is not None  # pending, not lapsed
    assert balance_json(holding.public_id, now + timedelta(seconds=61)) is None

    due = make_account(now=now - timedelta(days=40), free=True)
    due.refresh_from_db()
    assert _free_due(due, now)
    assert balance_json(due.public_id, now) is None


def _free_due(account: Account, now: datetime) -> bool:
    """the period oracle's answer: the account is active and lacks the grant of the period at now."""
    period = period_at(first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=now)
    granted = account.free_period_start
    return account.status == Account.Status.ACTIVE and (granted is None or granted < period.start)


def test_the_free_period_decision_matches_the_period_oracle():
    """The SQL decision (billing_free_due), in the balance read, against the period oracle
    (tests/billing/period_oracle.py): instants on month and day edges and at random, anchors at
    both ends, a first period before, at and after now's month (a clock moved back), on its
    anchor day's midnight or not (an anchor changed later), and a last free period just at,
    before and after the one due."""
    rng = random.Random(11)
    account = make_account()
    base = datetime(2024, 1, 1, tzinfo=UTC)
    instants = [
        datetime(2024, 2, 29, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC) - timedelta(microseconds=1),
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 3, 28, tzinfo=UTC) - timedelta(microseconds=1),
    ]
    instants += [base + timedelta(seconds=rng.randrange(3 * 365 * 86400)) for _ in range(16)]
    checked = due_seen = 0
    for now in instants:
        for anchor in (1, 15, 28):
            for months_before in (-1, 0, 1, 13):
                month = datetime(now.year, now.month, anchor, tzinfo=UTC) - timedelta(days=31 * months_before)
                for first in (
                    month.replace(day=anchor),
                    month.replace(day=anchor) + timedelta(hours=rng.randrange(1, 96)),
                ):
                    period = period_at(first_period_start=first, anchor_day=anchor, now=now)
                    for granted in (
                        None,
                        period.start,
                        period.start - timedelta(microseconds=1),
                        period.start + timedelta(days=1),
                    ):
                        Account.objects.filter(pk=account.pk).update(
                            period_anchor_day=anchor, first_period_start=first, free_period_start=granted
                        )
                        account.refresh_from_db()
                        due = _free_due(account, now)
                        case = (now, anchor, first, granted)
                        assert (balance_json(account.public_id, now) is None) == due, case
                        checked += 1
                        due_seen += due
    assert checked == 21 * 3 * 4 * 2 * 4
    assert 0 < due_seen < checked


# --- the balance route ----------------------------------------------------------------------


def test_the_balance_route_is_rate_limited_and_refuses_a_wrong_key(service_key, settings):
    settings.RATE_LIMITS = {"service": 3, "user": 0, "anon": 0}
    due = make_account(now=timezone.now() - timedelta(days=40), free=True)  # settled by the first read
    api = Api(service_key)
    path = f"/accounts/{due.public_id}/balance"
    assert [api.get(path).status_code for _ in range(3)] == [200, 200, 200]
    limited = api.get(path)
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"

    wrong = Api("sk_" + "x" * 40)
    refused = wrong.get(path)
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "authentication_failed"
    assert wrong.get(path, unused="1").status_code == 401


@pytest.mark.parametrize("micro", [0, 1, 17, 500_000, 999_999])
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 8, 0, 5, tzinfo=UTC),
    ],
)
def test_billing_iso_writes_a_time_as_drf_does_whatever_the_session_time_zone(moment, micro):
    from django.db import connection
    from rest_framework.fields import DateTimeField

    value = moment.replace(microsecond=micro)
    written = []
    with connection.cursor() as cursor:
        for zone in ("UTC", "Asia/Kolkata"):
            cursor.execute("SELECT set_config('TimeZone', %s, true), billing_iso(%s)", [zone, value])
            written.append(cursor.fetchone()[1])
    assert written == [DateTimeField().to_representation(value)] * 2

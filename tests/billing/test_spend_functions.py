"""The spend functions (billing_debit(), billing_hold(), billing_capture(); billing/sql/) through
their wrappers and through the API.

A debit, hold or capture is one database statement that locks the account, settles what lapsed
(lots, holds, the free grant due), moves the credits and records the Idempotency-Key with the
answer. These tests drive every outcome, check the free-period decision against
the period oracle, and race requests on one account and one key.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Account
from billing.models import Debit, Grant, Hold, IdempotencyKey, LedgerEntry, Operation
from billing.quotas import quota_settings
from billing.serializers import (
    CaptureRequest,
    DebitOut,
    HoldOut,
    HoldRequest,
    capture_request_fast,
    hold_request_fast,
)
from billing.services.ledger import (
    KEY_TAKEN,
    MADE,
    Actor,
    KeyRecord,
    debit_spend,
    hold_capture_recorded,
    hold_create,
)
from tests.billing.factories import give, make_account
from tests.billing.period_oracle import period_at
from tests.billing.test_concurrency import Reply, run_concurrently
from tests.billing.test_debit_batch import _variants, assert_fast_subset
from tests.conftest import Api

SERVICE = Actor("service", "7")
EXPIRES_IN_VALUES = [0, 1, 900, 86400, 86401, -1, True, 1.0, "60", None]


@pytest.fixture(autouse=True)
def _quota_policy_read(db):  # type: ignore[no-untyped-def]
    """The billing policy's quotas are read once per few seconds per process, not per spend:
    read them here, so that the statements counted below are the spend's own."""
    quota_settings()


def data_statements(queries) -> list[str]:  # type: ignore[no-untyped-def]
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
    return [q["sql"] for q in queries if not q["sql"].startswith(control)]


def one_call(account: Account | str, credits: int | None, *, key: str, operation: str = "", now=None):  # type: ignore[no-untyped-def]
    public_id = account if isinstance(account, str) else account.public_id
    return debit_spend(
        account=public_id,
        credits=credits,
        operation=operation,
        reference=f"ref-{key}",
        actor=SERVICE,
        record=KeyRecord("svc:test", key, "hash-" + key),
        now=now or timezone.now(),
    )


@pytest.mark.django_db
def test_a_debit_is_one_statement_and_its_key_holds_the_answer(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 2, expires_at=timezone.now() + timedelta(days=3), priority=10)
    give(account, 5)
    api = Api(service_key)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200  # the key is cached now
    with CaptureQueriesContext(connection) as queries:
        response = api.post(f"/accounts/{account.public_id}/debits", {"credits": 4, "reference": "r-1"}, idem="one")

    assert response.status_code == 201, response.content
    statements = data_statements(queries)
    assert len(statements) == 1 and "billing_debit(" in statements[0], statements
    debit = Debit.objects.select_related("account").get(public_id=response.json()["id"])
    expected = dict(DebitOut(debit).data)
    expected["balance"] = {"available": 3, "held": 0}
    assert response.json() == expected
    assert IdempotencyKey.objects.get(key="one").response_body == expected
    assert [e.credits for e in LedgerEntry.objects.filter(debit=debit).order_by("id")] == [-2, -2]
    replayed = api.post(f"/accounts/{account.public_id}/debits", {"credits": 4, "reference": "r-1"}, idem="one")
    assert replayed.status_code == 201 and replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == expected
    assert Debit.objects.filter(account=account).count() == 1
    assert_ledger_clean()


@pytest.mark.django_db
def test_a_debit_that_leaves_credits_in_a_lot_updates_it_in_place(service_key, assert_ledger_clean):
    """The spendable index names the generated `spendable`, not `remaining` (migration billing
    0010): PostgreSQL updates a lot that keeps credits as a HOT update, without new index
    entries; only the debit that empties it changes an indexed value."""
    account = make_account()
    lot = give(account, 4)
    api = Api(service_key)
    path = f"/accounts/{account.public_id}/debits"

    def hot_updates() -> int:  # this test's transaction's, which every request runs in
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_get_xact_tuples_hot_updated('billing_grant'::regclass)")
            return cursor.fetchone()[0]

    before = hot_updates()
    assert [api.post(path, {"credits": 1, "reference": "r"}).status_code for _ in range(3)] == [201] * 3
    assert hot_updates() == before + 3
    assert api.post(path, {"credits": 1, "reference": "r"}).status_code == 201  # empties the lot
    assert hot_updates() == before + 3
    lot.refresh_from_db()
    assert lot.remaining == 0 and lot.spendable is False
    assert Grant.objects.filter(account=account, spendable=True).count() == 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'billing_grant'")
        assert cursor.fetchone()[0] == ["fillfactor=85"]
    assert_ledger_clean()


def test_an_operation_is_charged_its_price(service_key):
    account = make_account()
    give(account, 10)
    price = 3
    Operation.objects.update_or_create(code="upscale", defaults={"credits": price, "active": True})
    response = Api(service_key).post(
        f"/accounts/{account.public_id}/debits", {"operation": "upscale", "reference": "r"}, idem="op"
    )
    assert response.status_code == 201, response.content
    assert response.json()["credits"] == price and response.json()["operation"] == "upscale"
    assert response.json()["balance"] == {"available": 10 - price, "held": 0}
    assert IdempotencyKey.objects.get(key="op").response_body == response.json()


@pytest.mark.django_db
def test_an_unknown_operation_is_a_400_and_records_nothing(service_key):
    account = make_account()
    give(account, 10)
    assert one_call(account, None, key="x", operation="nope").outcome == "unknown_operation"
    response = Api(service_key).post(
        f"/accounts/{account.public_id}/debits", {"operation": "nope", "reference": "r"}, idem="unknown"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"
    assert not IdempotencyKey.objects.filter(key="unknown").exists()
    assert not Debit.objects.exists()


@pytest.mark.django_db
def test_insufficient_credits_are_refused_recorded_and_replayed(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 2)
    assert one_call(account, 3, key="direct").outcome == "insufficient"
    api = Api(service_key)
    path = f"/accounts/{account.public_id}/debits"
    first = api.post(path, {"credits": 3, "reference": "r"}, idem="poor")
    assert first.status_code == 402
    assert first.json()["error"] | {} == {
        "code": "insufficient_credits",
        "message": first.json()["error"]["message"],
        "available": 2,
        "requested": 3,
    }
    give(account, 5)  # a retry with the same key still answers the recorded refusal
    again = api.post(path, {"credits": 3, "reference": "r"}, idem="poor")
    assert again.status_code == 402 and again["Idempotent-Replayed"] == "true"
    assert not Debit.objects.exists()
    assert_ledger_clean()


@pytest.mark.django_db
def test_a_recorded_key_replays_and_a_changed_request_is_a_conflict(service_key):
    account = make_account()
    give(account, 10)
    assert one_call(account, 1, key="k").outcome == MADE
    # The key's insert, the call's last statement, finds it recorded: the whole call rolls back.
    assert one_call(account, 1, key="k").outcome == KEY_TAKEN
    account.refresh_from_db()
    assert account.available_credits == 9 and Debit.objects.filter(account=account).count() == 1
    api = Api(service_key)
    path = f"/accounts/{account.public_id}/debits"
    assert api.post(path, {"credits": 1, "reference": "a"}, idem="same").status_code == 201
    changed = api.post(path, {"credits": 2, "reference": "a"}, idem="same")
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_key_reused"
    assert Debit.objects.filter(account=account).count() == 2


@pytest.mark.django_db
def test_a_replay_is_answered_even_when_the_request_would_now_be_refused_before_any_movement(service_key):
    """Debits and holds meet a recorded key only at their end: a replay whose operation was
    deactivated since, or whose account is now unknown to the call, still answers the recording."""
    account = make_account()
    give(account, 10)
    Operation.objects.update_or_create(code="retired", defaults={"credits": 2, "active": True})
    api = Api(service_key)
    path = f"/accounts/{account.public_id}/debits"
    first = api.post(path, {"operation": "retired", "reference": "r"}, idem="op")
    assert first.status_code == 201
    Operation.objects.filter(code="retired").update(active=False)
    again = api.post(path, {"operation": "retired", "reference": "r"}, idem="op")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    fresh = api.post(path, {"operation": "retired", "reference": "r"}, idem="op-2")
    assert fresh.status_code == 400 and fresh.json()["error"]["code"] == "validation_error"


# --- what the call settles first -------------------------------------------------------------


@pytest.mark.django_db
def test_unknown_and_suspended_accounts_are_refused_and_lapsed_lots_and_holds_settled_in_the_call(
    service_key, assert_ledger_clean
):
    now = timezone.now()
    api = Api(service_key)

    assert one_call("acct_doesnotexist", 1, key="u").outcome == "not_found"
    assert api.post("/accounts/acct_doesnotexist/debits", {"credits": 1, "reference": "r"}).status_code == 404

    suspended = make_account(status=Account.Status.SUSPENDED)
    give(suspended, 5)
    assert one_call(suspended, 1, key="s").outcome == "suspended"
    refused = api.post(f"/accounts/{suspended.public_id}/debits", {"credits": 1, "reference": "r"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_suspended"

    lapsed_lot = make_account()
    give(lapsed_lot, 4, expires_at=now - timedelta(seconds=1), now=now - timedelta(days=1))
    give(lapsed_lot, 3, now=now - timedelta(days=1))
    with CaptureQueriesContext(connection) as queries:
        spent = api.post(f"/accounts/{lapsed_lot.public_id}/debits", {"credits": 3, "reference": "r"})
    assert len(data_statements(queries)) == 1
    assert spent.status_code == 201 and spent.json()["balance"] == {"available": 0, "held": 0}
    assert LedgerEntry.objects.filter(account=lapsed_lot, kind="expire", credits=-4).count() == 1

    lapsed_hold = make_account()
    give(lapsed_hold, 5, now=now - timedelta(hours=2))
    hold = hold_create(account=lapsed_hold, credits=5, expires_in=60, actor=SERVICE, now=now - timedelta(hours=1))
    assert one_call(lapsed_hold, 5, key="h").outcome == MADE
    assert Hold.objects.get(pk=hold.pk).status == Hold.Status.EXPIRED
    lapsed_hold.refresh_from_db()
    assert (lapsed_hold.available_credits, lapsed_hold.held_credits) == (0, 0)
    assert_ledger_clean()


@pytest.mark.django_db
def test_the_lazy_free_grant_is_made_by_the_debit_itself(service_key, assert_ledger_clean):
    signup = timezone.now() - timedelta(days=40)
    account = make_account(now=signup, free=True)  # no grant made yet: two periods are owed
    api = Api(service_key)
    assert api.get(f"/accounts/{make_account().public_id}/balance").status_code == 200  # the key is cached now
    with CaptureQueriesContext(connection) as queries:
        response = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"})
    assert response.status_code == 201, response.content
    assert len(data_statements(queries)) == 1
    # The current period's grant, the one a debit now can spend (the first period's lapsed unmade).
    assert list(Grant.objects.filter(account=account).values_list("source", "amount")) == [("free_monthly", 15)]
    assert response.json()["balance"] == {"available": 14, "held": 0}
    assert one_call(account, 1, key="g").outcome == MADE
    assert Grant.objects.filter(account=account).count() == 1
    assert_ledger_clean()


# --- the free-period decision equals the period oracle ------------------------------------


def instants(rng: random.Random) -> list[datetime]:
    fixed = [
        datetime(2024, 2, 29, 0, 0, tzinfo=UTC),
        datetime(2024, 2, 28, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2025, 1, 31, 12, tzinfo=UTC),
        datetime(2025, 3, 1, 0, 0, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 28, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 27, 23, 59, 59, tzinfo=UTC),
    ]
    base = datetime(2024, 1, 1, tzinfo=UTC)
    return fixed + [base + timedelta(seconds=rng.randrange(3 * 365 * 86400)) for _ in range(16)]


@pytest.mark.django_db
def test_the_free_period_decision_matches_the_period_oracle():
    rng = random.Random(20261123)
    account = make_account()
    give(account, 10**6)
    checked = Counter()
    for now in instants(rng):
        for anchor in (1, 2, 15, 27, 28):
            for months_before in (-1, 0, 1, 13):
                first = datetime(now.year, now.month, anchor, tzinfo=UTC) - timedelta(days=31 * months_before)
                first = first.replace(day=anchor)
                period = period_at(first_period_start=first, anchor_day=anchor, now=now)
                for granted, due in ((period.start, False), (period.start - timedelta(microseconds=1), True)):
                    Account.objects.filter(pk=account.pk).update(
                        period_anchor_day=anchor, first_period_start=first, free_period_start=granted
                    )
                    grants = Grant.objects.filter(account=account, source="free_monthly").count()
                    result = one_call(account, 1, key=f"p{sum(checked.values())}", now=now)
                    case = (now, anchor, first, granted, period)
                    assert result.outcome == MADE, case
                    assert Grant.objects.filter(account=account, source="free_monthly").count() == grants + due, case
                    account.refresh_from_db()
                    assert account.free_period_start == period.start, case
                    if due:
                        made = Grant.objects.get(account=account, period_start=period.start)
                        assert (made.amount, made.expires_at) == (15 if period.index else 50, period.end), case
                        Grant.objects.filter(pk=made.pk).update(period_start=None, source="promo")
                    checked[due] += 1
    assert checked == {False: 480, True: 480}


# --- under concurrency ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_key_sent_at_once_debits_once(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 10)
    threads, key = 12, "the-same-key"

    def work(index: int) -> Reply:
        body = {"credits": 1, "reference": "r"}
        return Reply.of(Api(service_key).post(f"/accounts/{account.public_id}/debits", body, idem=key))

    replies = run_concurrently(threads, work)

    assert [reply.status for reply in replies] == [201] * threads
    assert len({json.dumps(reply.body, sort_keys=True) for reply in replies}) == 1
    assert Counter(reply.replayed for reply in replies) == {None: 1, "true": threads - 1}
    assert Debit.objects.filter(account=account).count() == 1
    account.refresh_from_db()
    assert account.available_credits == 9
    assert_ledger_clean()


@pytest.mark.django_db(transaction=True)
def test_one_call_debits_racing_on_one_account_spend_exactly_the_balance(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 30, expires_at=timezone.now() + timedelta(days=2))
    give(account, 30)
    threads, each = 8, 10  # 80 requests for 60 credits

    def work(index: int) -> list[int]:
        api = Api(service_key)
        path = f"/accounts/{account.public_id}/debits"
        body = {"credits": 1, "reference": "r"}
        return [api.post(path, body, idem=f"race-{index}-{n}").status_code for n in range(each)]

    outcomes = [status for statuses in run_concurrently(threads, work) for status in statuses]

    assert Counter(outcomes) == {201: 60, 402: 20}
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (0, 0)
    assert set(Grant.objects.filter(account=account).values_list("remaining", flat=True)) == {0}
    assert Debit.objects.filter(account=account).count() == 60
    assert_ledger_clean()


# --- holds --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_hold_is_one_statement_its_key_holds_the_answer_and_it_captures(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 2, expires_at=timezone.now() + timedelta(days=3), priority=10)
    give(account, 5)
    api = Api(service_key)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200  # the key is cached now
    with CaptureQueriesContext(connection) as queries:
        response = api.post(
            f"/accounts/{account.public_id}/holds", {"credits": 4, "reference": "h-1", "expires_in": 120}, idem="h"
        )

    assert response.status_code == 201, response.content
    statements = data_statements(queries)
    assert len(statements) == 1 and "billing_hold(" in statements[0], statements
    hold = Hold.objects.select_related("account").get(public_id=response.json()["id"])
    assert response.json() == dict(HoldOut(hold).data)
    assert (hold.expires_at - hold.created_at) == timedelta(seconds=120)
    assert IdempotencyKey.objects.get(key="h").response_body == response.json()
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (3, 4)
    assert [(e.credits, e.held_credits) for e in LedgerEntry.objects.filter(hold=hold).order_by("id")] == [
        (-2, 2),
        (-2, 2),
    ]
    replayed = api.post(
        f"/accounts/{account.public_id}/holds", {"credits": 4, "reference": "h-1", "expires_in": 120}, idem="h"
    )
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == response.json()
    captured = api.post(f"/holds/{hold.public_id}/capture", {"credits": 3})
    assert captured.status_code == 200 and captured.json()["status"] == "captured"
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (4, 0)
    assert_ledger_clean()


@pytest.mark.django_db
def test_a_hold_by_operation_with_the_default_expiry_and_the_refusals(service_key, settings):
    account = make_account()
    give(account, 4)
    Operation.objects.update_or_create(code="upscale", defaults={"credits": 3, "active": True})
    api = Api(service_key)
    path = f"/accounts/{account.public_id}/holds"
    made = api.post(path, {"operation": "upscale", "reference": "r"})
    assert made.status_code == 201 and made.json()["credits"] == 3
    hold = Hold.objects.get(public_id=made.json()["id"])
    assert (hold.expires_at - hold.created_at) == timedelta(seconds=settings.HOLD_DEFAULT_EXPIRES_IN_SECONDS)
    poor = api.post(path, {"credits": 2, "reference": "r"}, idem="poor")
    assert poor.status_code == 402 and poor.json()["error"]["available"] == 1
    assert IdempotencyKey.objects.get(key="poor").status_code == 402
    unknown = api.post(path, {"operation": "nope", "reference": "r"}, idem="nope")
    assert unknown.status_code == 400 and not IdempotencyKey.objects.filter(key="nope").exists()


@pytest.mark.parametrize(
    "raw",
    [
        *[
            {k: v for k, v in variant.items() if k not in ("account_id", "idempotency_key")}
            for variant in _variants()
            if isinstance(variant, dict)
        ],
        *[{"credits": 1, "reference": "r", "expires_in": value} for value in EXPIRES_IN_VALUES],
        {"operation": "generation", "reference": "r", "expires_in": 60},
        "not a dict",
    ],
)
def test_the_fast_hold_check_accepts_only_what_the_serializer_accepts(raw):
    assert_fast_subset(hold_request_fast, HoldRequest, raw)


def test_the_fast_hold_check_takes_the_common_bodies():
    assert hold_request_fast({"credits": 1, "reference": "r"}) is not None
    assert hold_request_fast({"operation": "generation", "reference": "r", "expires_in": 60}) is not None


# --- captures -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_capture_is_one_statement_and_its_key_holds_the_answer(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 5)
    api = Api(service_key)
    made = api.post(f"/accounts/{account.public_id}/holds", {"credits": 4, "reference": "r"})
    hold = made.json()["id"]
    with CaptureQueriesContext(connection) as queries:
        captured = api.post(f"/holds/{hold}/capture", {"credits": 1}, idem="cap")

    assert captured.status_code == 200, captured.content
    statements = data_statements(queries)
    assert len(statements) == 1 and "billing_capture(" in statements[0], statements
    expected = dict(HoldOut(Hold.objects.select_related("account").get(public_id=hold)).data)
    assert list(captured.json().items()) == list(expected.items())  # the same fields, in the same order
    assert IdempotencyKey.objects.get(key="cap").response_body == expected
    replayed = api.post(f"/holds/{hold}/capture", {"credits": 1}, idem="cap")
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == expected
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (4, 0)
    assert_ledger_clean()


@pytest.mark.django_db
def test_every_outcome_of_a_capture(service_key, assert_ledger_clean):
    account = make_account()
    give(account, 9)
    api = Api(service_key)
    now = timezone.now()

    def hold(**fields: Any) -> str:
        return api.post(f"/accounts/{account.public_id}/holds", {"credits": 3, "reference": "r", **fields}).json()["id"]

    record = KeyRecord("svc:test", "direct", "hash")
    missing = hold_capture_recorded(hold="hold_doesnotexist", credits=None, actor=SERVICE, record=record, now=now)
    assert missing.outcome == "not_found"
    assert api.post("/holds/hold_doesnotexist/capture", {}).status_code == 404

    once = hold()
    assert api.post(f"/holds/{once}/capture", {}).status_code == 200
    again = api.post(f"/holds/{once}/capture", {})
    assert again.status_code == 409 and again.json()["error"]["code"] == "hold_not_pending"

    too_much = hold()
    refused = api.post(f"/holds/{too_much}/capture", {"credits": 4})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "validation_error"

    lapsing = hold(expires_in=1)
    later = now + timedelta(seconds=5)
    with time_machine.travel(later):
        expired = api.post(f"/holds/{lapsing}/capture", {})
    assert expired.status_code == 409 and expired.json()["error"]["code"] == "hold_expired"
    assert Hold.objects.get(public_id=lapsing).status == Hold.Status.EXPIRED
    account.refresh_from_db()
    # 9 credits: 3 captured, 3 still held by the refused capture, 3 released by the expiry.
    assert (account.available_credits, account.held_credits) == (3, 3)
    assert_ledger_clean()


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"credits": 0},
        {"credits": 5},
        {"credits": -1},
        {"credits": True},
        {"credits": 1.0},
        {"credits": "1"},
        {"credits": None},
        {"credits": 10**6},
        {"credits": 10**6 + 1},
        {"extra": 1},
        {"credits": 1, "extra": 1},
        [],
        "x",
        None,
    ],
)
def test_the_fast_capture_check_accepts_only_what_the_serializer_accepts(raw):
    assert_fast_subset(capture_request_fast, CaptureRequest, raw)

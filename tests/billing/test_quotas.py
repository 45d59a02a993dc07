"""Per-account quotas on the spend routes (DESIGN.md, Quotas): a token bucket of spends and a
daily cap of credits, counted on the locked account row by the spend functions
(billing/sql/billing_spend_quota.sql), against real PostgreSQL, with time moved by time-machine.
The 200-thread race is in test_quota_concurrency.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from accounts.models import Account
from billing.models import BillingPolicy, Debit, Hold, IdempotencyKey
from billing.policy import policy_get
from billing.quotas import quota_policy_forget
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db

NOON = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
BEFORE_MIDNIGHT = datetime(2027, 3, 10, 23, 59, 50, tzinfo=UTC)
AFTER_MIDNIGHT = datetime(2027, 3, 11, 0, 0, 5, tzinfo=UTC)


@pytest.fixture
def limits(settings):
    """Both quotas off, as the test settings have them; each test turns on what it tests."""
    settings.RATE_LIMIT_ACCOUNT_PER_MINUTE = 0
    settings.RATE_LIMIT_ACCOUNT_BURST = 10
    settings.DAILY_CAP_CREDITS = 0
    return settings


@pytest.fixture
def rich() -> Account:
    account = make_account()
    give(account, 1000)
    return account


def debit(api: Api, account: Account, credits: int, idem: str = "auto") -> Any:
    return api.post(f"/accounts/{account.public_id}/debits", {"credits": credits, "reference": "job"}, idem=idem)


def hold(api: Api, account: Account, credits: int, expires_in: int = 600) -> Any:
    body = {"credits": credits, "reference": "job", "expires_in": expires_in}
    return api.post(f"/accounts/{account.public_id}/holds", body)


def code(response: Any) -> tuple[int, str | None]:
    error = response.json().get("error") if response.status_code >= 400 else None
    return response.status_code, error["code"] if error else None


def rate_headers(response: Any) -> tuple[str, str, str]:
    return response["RateLimit-Limit"], response["RateLimit-Remaining"], response["RateLimit-Reset"]


def available(account: Account) -> int:
    return Account.objects.get(pk=account.pk).available_credits


# --- Rate limit ---------------------------------------------------------------------------------


def test_a_burst_is_allowed_then_refused_until_a_token_refills(api, rich, limits, time_machine):
    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE, limits.RATE_LIMIT_ACCOUNT_BURST = 60, 3  # a token a second
    time_machine.move_to(NOON, tick=False)
    answers = [debit(api, rich, 1) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 201]
    # Each success says what is left of the bucket and when it is full again.
    assert [rate_headers(a) for a in answers] == [("3", "2", "1"), ("3", "1", "2"), ("3", "0", "3")]

    refused = debit(api, rich, 1)
    assert code(refused) == (429, "rate_limited")
    assert refused["Retry-After"] == "1" and refused.json()["error"]["retry_after"] == 1
    assert rate_headers(refused) == ("3", "0", "3")
    assert available(rich) == 997  # nothing moved

    time_machine.move_to(NOON + timedelta(seconds=1), tick=False)
    assert debit(api, rich, 1).status_code == 201
    assert code(debit(api, rich, 1)) == (429, "rate_limited")
    time_machine.move_to(NOON + timedelta(seconds=60), tick=False)  # refilled up to the burst, no more
    assert [debit(api, rich, 1).status_code for _ in range(4)] == [201, 201, 201, 429]


def test_holds_take_tokens_from_the_same_bucket_as_debits(api, rich, limits, time_machine):
    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE, limits.RATE_LIMIT_ACCOUNT_BURST = 50, 2
    time_machine.move_to(NOON, tick=False)
    assert hold(api, rich, 1).status_code == 201
    assert debit(api, rich, 1).status_code == 201
    refused = hold(api, rich, 1)
    assert code(refused) == (429, "rate_limited")
    assert refused["Retry-After"] == "2"  # 1.2 s for a token at 50 a minute, rounded up
    assert Hold.objects.filter(account=rich).count() == 1


def test_a_refused_spend_takes_no_token(api, limits, time_machine):
    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE, limits.RATE_LIMIT_ACCOUNT_BURST = 60, 1
    time_machine.move_to(NOON, tick=False)
    poor = make_account()
    give(poor, 1)
    assert code(debit(api, poor, 5)) == (402, "insufficient_credits")
    assert debit(api, poor, 1).status_code == 201


def test_a_rate_limited_spend_is_not_recorded_under_its_key_and_succeeds_after_retry_after(
    api, rich, limits, time_machine
):
    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE, limits.RATE_LIMIT_ACCOUNT_BURST = 30, 1
    time_machine.move_to(NOON, tick=False)
    assert debit(api, rich, 1).status_code == 201
    refused = debit(api, rich, 7, idem="job-42")
    assert code(refused) == (429, "rate_limited")
    assert not IdempotencyKey.objects.filter(key="job-42").exists()
    again = debit(api, rich, 7, idem="job-42")  # too soon: refused again, not replayed
    assert code(again) == (429, "rate_limited") and not again.has_header("Idempotent-Replayed")

    time_machine.move_to(NOON + timedelta(seconds=int(refused["Retry-After"])), tick=False)
    made = debit(api, rich, 7, idem="job-42")
    assert made.status_code == 201 and not made.has_header("Idempotent-Replayed")
    replayed = debit(api, rich, 7, idem="job-42")
    assert replayed.status_code == 201 and replayed["Idempotent-Replayed"] == "true"
    assert Debit.objects.filter(account=rich, credits=7).count() == 1


def test_an_insufficient_refusal_is_still_recorded_under_its_key(api, limits):
    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE = 50
    poor = make_account()
    assert code(debit(api, poor, 5, idem="poor-1")) == (402, "insufficient_credits")
    assert IdempotencyKey.objects.get(key="poor-1").status_code == 402


def test_the_accounts_own_rate_limit_beats_the_setting(api, rich, limits, time_machine):
    time_machine.move_to(NOON, tick=False)
    Account.objects.filter(pk=rich.pk).update(rate_limit_per_minute=6, rate_limit_burst=2)
    answers = [debit(api, rich, 1) for _ in range(3)]  # the setting is off: the account's own limit
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2]["Retry-After"] == "10" and rate_headers(answers[2]) == ("2", "0", "20")

    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE = 50
    other = make_account()
    give(other, 100)
    Account.objects.filter(pk=other.pk).update(rate_limit_per_minute=0)  # off for this one account
    answers = [debit(api, other, 1) for _ in range(20)]
    assert {a.status_code for a in answers} == {201}
    assert not answers[-1].has_header("RateLimit-Limit")


def test_a_rate_limit_of_zero_lets_every_spend_through_without_headers(api, rich, limits, time_machine):
    time_machine.move_to(NOON, tick=False)
    answers = [debit(api, rich, 1) for _ in range(30)]
    assert {a.status_code for a in answers} == {201}
    assert not any(a.has_header("RateLimit-Remaining") for a in answers)


# --- Daily cap ----------------------------------------------------------------------------------


def test_the_daily_cap_refuses_past_it_until_the_next_utc_day(api, rich, limits, time_machine):
    limits.DAILY_CAP_CREDITS = 10
    time_machine.move_to(BEFORE_MIDNIGHT, tick=False)
    assert debit(api, rich, 6).status_code == 201
    refused = debit(api, rich, 5, idem="cap-1")
    assert code(refused) == (429, "daily_cap_reached")
    assert refused["Retry-After"] == "10" and refused.json()["error"]["retry_after"] == 10
    assert not IdempotencyKey.objects.filter(key="cap-1").exists()
    assert code(hold(api, rich, 5)) == (429, "daily_cap_reached")  # holds count too
    assert debit(api, rich, 4).status_code == 201  # up to the cap exactly
    assert available(rich) == 990

    time_machine.move_to(AFTER_MIDNIGHT, tick=False)
    assert debit(api, rich, 5, idem="cap-1").status_code == 201  # the same request, the next day
    assert debit(api, rich, 5).status_code == 201
    assert code(debit(api, rich, 1)) == (429, "daily_cap_reached")
    assert available(rich) == 980


def test_released_and_partly_captured_holds_give_their_credits_back_to_the_day(api, rich, limits, time_machine):
    limits.DAILY_CAP_CREDITS = 10
    time_machine.move_to(NOON, tick=False)
    first = hold(api, rich, 6).json()["id"]
    assert code(debit(api, rich, 5)) == (429, "daily_cap_reached")
    assert api.post(f"/holds/{first}/release", {}).status_code == 200
    assert debit(api, rich, 5).status_code == 201  # the released 6 are back: 5 spent today

    second = hold(api, rich, 5).json()["id"]  # 10 counted
    assert api.post(f"/holds/{second}/capture", {"credits": 2}).status_code == 200  # 3 back: 7
    assert debit(api, rich, 3).status_code == 201
    assert code(debit(api, rich, 1)) == (429, "daily_cap_reached")


def test_a_hold_that_lapses_gives_its_credits_back_to_the_day(api, rich, limits, time_machine):
    limits.DAILY_CAP_CREDITS = 10
    time_machine.move_to(NOON, tick=False)
    assert hold(api, rich, 8, expires_in=60).status_code == 201
    assert code(debit(api, rich, 3)) == (429, "daily_cap_reached")
    time_machine.move_to(NOON + timedelta(seconds=61), tick=False)
    assert debit(api, rich, 10).status_code == 201  # the spend's own settling released the hold first
    assert Hold.objects.get(account=rich).status == Hold.Status.EXPIRED


def test_a_hold_made_yesterday_gives_nothing_back_to_today(api, rich, limits, time_machine):
    limits.DAILY_CAP_CREDITS = 10
    time_machine.move_to(BEFORE_MIDNIGHT, tick=False)
    held = hold(api, rich, 8).json()["id"]
    time_machine.move_to(AFTER_MIDNIGHT, tick=False)
    assert debit(api, rich, 10).status_code == 201
    assert api.post(f"/holds/{held}/release", {}).status_code == 200
    assert code(debit(api, rich, 1)) == (429, "daily_cap_reached")


def test_the_accounts_own_daily_cap_beats_the_setting(api, rich, limits, time_machine):
    time_machine.move_to(NOON, tick=False)
    Account.objects.filter(pk=rich.pk).update(daily_cap_credits=5)
    assert code(debit(api, rich, 6)) == (429, "daily_cap_reached")  # the setting is off (0)
    assert debit(api, rich, 5).status_code == 201

    limits.DAILY_CAP_CREDITS = 5
    other = make_account()
    give(other, 100)
    Account.objects.filter(pk=other.pk).update(daily_cap_credits=0)  # no cap for this one account
    assert debit(api, other, 60).status_code == 201


def test_a_spend_larger_than_the_whole_daily_cap_is_not_told_to_come_back(api, rich, limits, time_machine):
    limits.DAILY_CAP_CREDITS = 10
    time_machine.move_to(NOON, tick=False)
    for attempt in (hold(api, rich, 11), debit(api, rich, 11, idem="big-1")):
        assert code(attempt) == (429, "daily_cap_reached")
        assert not attempt.has_header("Retry-After") and attempt.json()["error"]["retry_after"] is None
        assert "can never be made" in attempt.json()["error"]["message"]
    item = {"account_id": rich.public_id, "credits": 11, "reference": "job", "idempotency_key": "big-2"}
    (result,) = api.post("/debits/batch", {"debits": [item]}).json()["results"]
    assert (result["status"], result["body"]["error"]["retry_after"]) == (429, None)
    assert debit(api, rich, 10).status_code == 201  # the whole cap, once
    assert available(rich) == 990


def test_a_daily_cap_of_zero_caps_nothing(api, rich, limits, time_machine):
    time_machine.move_to(NOON, tick=False)
    assert debit(api, rich, 900).status_code == 201
    assert debit(api, rich, 100).status_code == 201


def test_the_quota_settings_are_validated_at_start_up():
    for name, value in (
        ("RATE_LIMIT_ACCOUNT_PER_MINUTE", "-1"),
        ("RATE_LIMIT_ACCOUNT_BURST", "0"),
        ("DAILY_CAP_CREDITS", "lots"),
    ):
        run = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"],
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", name: value},
            capture_output=True,
            text=True,
        )
        assert run.returncode != 0 and name in run.stderr, (name, run.stderr[-300:])


# --- The document -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["debits", "holds"])
def test_the_spend_routes_document_the_quota_answers_and_headers(route):
    schema = json.loads(Client().get("/api/schema/", {"format": "json"}).content)
    responses = schema["paths"][f"/api/v1/accounts/{{account_id}}/{route}"]["post"]["responses"]
    refused = responses["429"]
    error = refused["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
    assert set(error["code"]["enum"]) == {"rate_limited", "daily_cap_reached"}
    assert error["retry_after"]["type"] == "integer"
    assert "Retry-After" in refused["headers"]
    for status in ("201", "429"):
        headers = responses[status]["headers"]
        for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert headers[name]["schema"]["type"] == "integer", (status, name)


def test_the_operators_policy_sets_the_quotas_of_accounts_without_their_own(api, rich, limits, time_machine):
    """The billing policy's quotas (admin-editable) beat the settings; an account's own beat
    both; a blank policy field leaves the setting (here: no limit) in force."""
    time_machine.move_to(NOON, tick=False)
    policy = policy_get()
    policy.rate_limit_per_minute, policy.rate_limit_burst = 60, 2
    policy.save()
    quota_policy_forget()
    assert [code(debit(api, rich, 1, idem=f"p{i}"))[0] for i in range(3)] == [201, 201, 429]
    own = make_account()
    give(own, 100)
    Account.objects.filter(pk=own.pk).update(rate_limit_per_minute=60, rate_limit_burst=3)
    assert [code(debit(api, own, 1, idem=f"o{i}"))[0] for i in range(4)] == [201, 201, 201, 429]
    BillingPolicy.objects.filter(pk=1).update(rate_limit_per_minute=None, rate_limit_burst=None)
    quota_policy_forget()
    assert [code(debit(api, rich, 1, idem=f"s{i}"))[0] for i in range(3)] == [201, 201, 201]


def test_batch_items_count_toward_the_same_quotas_as_single_debits(api, rich, limits, time_machine):
    limits.RATE_LIMIT_ACCOUNT_PER_MINUTE, limits.RATE_LIMIT_ACCOUNT_BURST = 60, 3
    limits.DAILY_CAP_CREDITS = 7
    time_machine.move_to(NOON, tick=False)
    assert debit(api, rich, 2).status_code == 201  # one token and 2 credits of the day
    other = make_account()
    give(other, 50)
    items = [
        {"account_id": rich.public_id, "credits": credits, "reference": "job", "idempotency_key": f"b{i}"}
        for i, credits in enumerate([1, 1, 1, 1])
    ] + [{"account_id": other.public_id, "credits": 6, "reference": "job", "idempotency_key": "o1"}]
    results = api.post("/debits/batch", {"debits": items}).json()["results"]
    codes = [(r["status"], r["body"].get("error", {}).get("code")) for r in results]
    # rich: two tokens left, then the bucket is empty; other: its own bucket and day.
    assert codes == [(201, None), (201, None), (429, "rate_limited"), (429, "rate_limited"), (201, None)]
    assert results[2]["body"]["error"]["retry_after"] == 1
    assert available(rich) == 996 and Debit.objects.filter(account=rich).count() == 3
    assert code(debit(api, rich, 1)) == (429, "rate_limited")  # the batch spent the single route's tokens
    time_machine.move_to(NOON + timedelta(seconds=60), tick=False)
    late = [dict(item, credits=2, idempotency_key=f"late{i}") for i, item in enumerate(items[:2])]
    results = api.post("/debits/batch", {"debits": late}).json()["results"]
    # 4 credits spent today, a cap of 7: the first 2 fit, the next 2 would make 8.
    assert [(r["status"], r["body"].get("error", {}).get("code")) for r in results] == [
        (201, None),
        (429, "daily_cap_reached"),
    ]
    rich.refresh_from_db()
    assert rich.day_spent == 6

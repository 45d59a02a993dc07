"""The per-account rate limit under concurrency, with real threads against PostgreSQL and Redis
(the service key's own limit counts every request there): spends racing for one account's
tokens are decided one at a time under the account's row lock, so exactly the bucket's tokens
are spent, however many requests arrive together. The application's clock is frozen at one
instant (time-machine patches it for every thread), so "within a second" is exact."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import Sum

from accounts.models import Account
from billing.models import Debit, Hold, IdempotencyKey
from tests.billing.factories import give, make_account
from tests.billing.test_concurrency import run_concurrently
from tests.conftest import Api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THREADS = 25  # each with its own database connection
INSTANT = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @classmethod
    def of(cls, response: Any) -> Answer:
        return cls(response.status_code, response.json(), dict(response.headers))


def spend_many(service_key: str, account: Account, count: int, tag: str) -> list[Answer]:
    """`count` spends, debits and holds in turn, each under its own Idempotency-Key."""
    api = Api(service_key)
    answers = []
    for n in range(count):
        route, body = ("debits", {"credits": 2}) if n % 2 else ("holds", {"credits": 3, "expires_in": 3600})
        response = api.post(
            f"/accounts/{account.public_id}/{route}", {**body, "reference": f"{tag}-{n}"}, idem=uuid.uuid4().hex
        )
        answers.append(Answer.of(response))
    return answers


def race(service_key: str, account: Account, spends: int, tag: str) -> list[Answer]:
    per_thread = spends // THREADS
    results = run_concurrently(THREADS, lambda i: spend_many(service_key, account, per_thread, f"{tag}{i}"))
    return [answer for answers in results for answer in answers]


def test_200_concurrent_spends_make_exactly_the_burst_and_refuse_the_rest_with_headers(
    service_key, settings, time_machine, assert_ledger_clean, run_check_ledger
):
    settings.RATE_LIMIT_ACCOUNT_PER_MINUTE, settings.RATE_LIMIT_ACCOUNT_BURST = 50, 10
    account = make_account()
    give(account, 1000)
    time_machine.move_to(INSTANT, tick=False)

    answers = race(service_key, account, 200, "a")

    assert Counter(answer.status for answer in answers) == {201: 10, 429: 190}
    made = [answer for answer in answers if answer.status == 201]
    # Each spend made took the next token: the remaining counts 9..0, each once, with the seconds
    # until the bucket is full again at 50 a minute (1.2 s a token).
    remaining = sorted(int(answer.headers["RateLimit-Remaining"]) for answer in made)
    assert remaining == list(range(10))
    for answer in made:
        left = int(answer.headers["RateLimit-Remaining"])
        assert answer.headers["RateLimit-Limit"] == "10"
        assert int(answer.headers["RateLimit-Reset"]) == math.ceil((10 - left) * 1.2)
    for answer in answers:
        if answer.status == 429:
            assert answer.body["error"]["code"] == "rate_limited", answer.body
            assert answer.body["error"]["retry_after"] == 2 and answer.headers["Retry-After"] == "2"
            limit = [answer.headers[f"RateLimit-{name}"] for name in ("Limit", "Remaining", "Reset")]
            assert limit == ["10", "0", "12"]

    # The ledger holds the ten spends made and nothing of the refused ones.
    debits, holds = Debit.objects.filter(account=account), Hold.objects.filter(account=account)
    assert debits.count() + holds.count() == 10
    spent = (debits.aggregate(t=Sum("credits"))["t"] or 0) + (holds.aggregate(t=Sum("credits"))["t"] or 0)
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (1000 - spent, 3 * holds.count())
    assert IdempotencyKey.objects.count() == 10  # the 429s are recorded under no key
    assert_ledger_clean()
    code, report = run_check_ledger()
    assert code == 0 and "ledger ok" in report, report

    # Six seconds later the bucket has refilled five tokens: of 50 more racing spends, five are made.
    time_machine.move_to(INSTANT + timedelta(seconds=6), tick=False)
    answers = race(service_key, account, 50, "b")
    assert Counter(answer.status for answer in answers) == {201: 5, 429: 45}
    assert Debit.objects.filter(account=account).count() + Hold.objects.filter(account=account).count() == 15
    assert_ledger_clean()

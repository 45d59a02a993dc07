"""Concurrency claims of the spend API, proved with real threads against PostgreSQL.

Every thread has its own test Client and so its own database connection (Django's connections
are per thread); it closes that connection when it is done, so the transactional test can
truncate the tables afterwards. A Barrier lines the threads up so their requests overlap.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Sum
from django.utils import timezone

from accounts.models import Account
from billing.models import Debit, Grant, Hold, LedgerEntry
from tests.billing.factories import give, make_account
from tests.concurrency import run_concurrently
from tests.conftest import Api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@dataclass(frozen=True)
class Reply:
    """What a thread keeps of one response (no response objects cross threads)."""

    status: int
    body: Any
    replayed: str | None

    @classmethod
    def of(cls, response: Any) -> Reply:
        return cls(response.status_code, response.json(), response.headers.get("Idempotent-Replayed"))

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


def idem() -> str:
    return f"conc-{uuid.uuid4().hex}"


def spend(api: Api, account: Account, path: str, credits: int, reference: str) -> Reply:
    return Reply.of(
        api.post(f"/accounts/{account.public_id}/{path}", {"credits": credits, "reference": reference}, idem=idem())
    )


def balance_of(api: Api, account: Account) -> dict[str, Any]:
    response = api.get(f"/accounts/{account.public_id}/balance")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def ledger_clean(assert_ledger_clean, run_check_ledger) -> Callable[[], None]:
    """Both views of the invariant: the selector the tests use and the operators' command."""

    def check() -> None:
        assert_ledger_clean()
        code, report = run_check_ledger()
        assert code == 0, report
        assert "ledger ok" in report, report

    return check


def account_with(credits_by_lot: list[int]) -> Account:
    """An account whose credits sit in several lots, so spends cross lot boundaries."""
    account = make_account()
    expires = timezone.now() + timedelta(days=30)
    for n, credits in enumerate(credits_by_lot):
        give(account, credits, expires_at=expires if n % 2 else None)
    return account


def assert_never_overdrawn(account: Account) -> None:
    entries = LedgerEntry.objects.filter(account=account)
    assert not entries.filter(balance_after__lt=0).exists()
    assert not entries.filter(held_after__lt=0).exists()
    assert not Grant.objects.filter(account=account, remaining__lt=0).exists()


# --- 1. Debits racing for the last credits -----------------------------------------------------


def test_parallel_debits_spend_exactly_the_balance_and_refuse_the_rest(service_key, ledger_clean):
    account = account_with([400, 350, 250])
    threads, attempts = 32, 2000
    share, extra = divmod(attempts, threads)

    def work(index: int) -> list[Reply]:
        api = Api(service_key)
        count = share + (1 if index < extra else 0)
        return [spend(api, account, "debits", 1, f"t{index}-{n}") for n in range(count)]

    replies = [reply for batch in run_concurrently(threads, work) for reply in batch]

    assert len(replies) == attempts
    by_status = Counter(reply.status for reply in replies)
    assert by_status == {201: 1000, 402: 1000}, by_status
    for reply in replies:
        if reply.status == 402:
            error = reply.body["error"]
            assert error["code"] == "insufficient_credits", reply.body
            assert (error["available"], error["requested"]) == (0, 1), reply.body
    # Each successful debit ran alone under the account lock, so each saw a different balance.
    after = sorted(reply.body["balance"]["available"] for reply in replies if reply.status == 201)
    assert after == list(range(1000))

    balance = balance_of(Api(service_key), account)
    assert (balance["available"], balance["held"]) == (0, 0)
    assert Debit.objects.filter(account=account).count() == 1000
    assert Debit.objects.filter(account=account).aggregate(t=Sum("credits"))["t"] == 1000
    assert_never_overdrawn(account)
    ledger_clean()


# --- 2. Debits, holds, captures and releases all at once ---------------------------------------


@dataclass
class Tally:
    debited: int = 0
    captured: int = 0
    refused: int = 0
    holds_left_pending: list[str] = field(default_factory=list)
    unexpected: list[tuple[str, int, Any]] = field(default_factory=list)


def refusal_is_sound(reply: Reply, requested: int) -> bool:
    """A 402 that names the request and an available balance too small for it."""
    if reply.status != 402 or reply.error_code != "insufficient_credits":
        return False
    error = reply.body["error"]
    return error["requested"] == requested and 0 <= error["available"] < requested


def mixed_worker(api: Api, account: Account, rng: random.Random, operations: int, tag: str) -> Tally:
    tally = Tally()
    for n in range(operations):
        # Up to 8 credits a spend: ~3 consumed per operation on average, so 1,000 run out.
        credits = rng.randint(1, 8)
        action = rng.choice(["debit", "debit", "capture", "capture_part", "release"])
        if action == "debit":
            reply = spend(api, account, "debits", credits, f"{tag}-{n}")
            if reply.status == 201:
                tally.debited += reply.body["credits"]
            elif refusal_is_sound(reply, credits):
                tally.refused += 1
            else:
                tally.unexpected.append(("debit", reply.status, reply.body))
            continue
        reply = spend(api, account, "holds", credits, f"{tag}-{n}")
        if refusal_is_sound(reply, credits):
            tally.refused += 1
            continue
        if reply.status != 201 or reply.body["status"] != "pending":
            tally.unexpected.append(("hold", reply.status, reply.body))
            continue
        hold_id = reply.body["id"]
        if action == "release":
            settled = Reply.of(api.post(f"/holds/{hold_id}/release", {}, idem=idem()))
            expected_status = "released"
        else:
            body = {"credits": rng.randint(0, credits)} if action == "capture_part" else {}
            settled = Reply.of(api.post(f"/holds/{hold_id}/capture", body, idem=idem()))
            expected_status = "captured"
        if settled.status != 200 or settled.body["status"] != expected_status:
            tally.unexpected.append((action, settled.status, settled.body))
            tally.holds_left_pending.append(hold_id)
            continue
        tally.captured += settled.body["captured_credits"]
    return tally


def test_parallel_debits_holds_and_captures_never_overdraw(service_key, ledger_clean):
    start = 1000
    account = account_with([600, 400])
    threads, operations = 24, 20

    def work(index: int) -> Tally:
        return mixed_worker(Api(service_key), account, random.Random(1000 + index), operations, f"t{index}")

    tallies = run_concurrently(threads, work)

    unexpected = [u for t in tallies for u in t.unexpected]
    assert unexpected == [], unexpected[:5]
    debited = sum(t.debited for t in tallies)
    captured = sum(t.captured for t in tallies)
    refused = sum(t.refused for t in tallies)
    assert refused > 0, "the workload never ran the account dry, so it proved nothing about overdraft"

    balance = balance_of(Api(service_key), account)
    assert balance["held"] == 0
    assert balance["available"] >= 0
    assert debited + captured == start - balance["available"]
    # The responses agree with what was written.
    assert (Debit.objects.filter(account=account).aggregate(t=Sum("credits"))["t"] or 0) == debited
    holds = Hold.objects.filter(account=account)
    assert not holds.filter(status=Hold.Status.PENDING).exists()
    assert (holds.aggregate(t=Sum("captured_credits"))["t"] or 0) == captured
    assert_never_overdrawn(account)
    ledger_clean()


# --- 3. Idempotency under concurrency ----------------------------------------------------------


def test_same_idempotency_key_sent_at_once_debits_exactly_once(service_key, ledger_clean):
    account = account_with([10])
    threads = 16
    key = idem()
    body = {"credits": 1, "reference": "same-request", "metadata": {"job": "j-1"}}

    def work(index: int) -> Reply:
        return Reply.of(Api(service_key).post(f"/accounts/{account.public_id}/debits", body, idem=key))

    replies = run_concurrently(threads, work)

    assert [reply.status for reply in replies] == [201] * threads, [(r.status, r.body) for r in replies]
    first = replies[0].body
    assert all(reply.body == first for reply in replies), [r.body for r in replies if r.body != first]
    assert Counter(reply.replayed for reply in replies) == {None: 1, "true": threads - 1}
    assert Debit.objects.filter(account=account).count() == 1
    assert Debit.objects.get(account=account).public_id == first["id"]
    balance = balance_of(Api(service_key), account)
    assert (balance["available"], balance["held"]) == (9, 0)
    ledger_clean()


def test_concurrent_captures_of_one_hold_settle_it_once(service_key, ledger_clean):
    account = account_with([20])
    api = Api(service_key)
    hold = spend(api, account, "holds", 5, "gen-1")
    assert hold.status == 201, hold.body
    threads = 16

    def work(index: int) -> Reply:
        return Reply.of(Api(service_key).post(f"/holds/{hold.body['id']}/capture", {}, idem=idem()))

    replies = run_concurrently(threads, work)

    assert Counter(reply.status for reply in replies) == {200: 1, 409: threads - 1}, [r.body for r in replies]
    (won,) = [reply for reply in replies if reply.status == 200]
    assert (won.body["status"], won.body["captured_credits"]) == ("captured", 5)
    assert {reply.error_code for reply in replies if reply.status == 409} == {"hold_not_pending"}
    assert LedgerEntry.objects.filter(hold__public_id=hold.body["id"], kind=LedgerEntry.Kind.CAPTURE).count() == 1
    balance = balance_of(api, account)
    assert (balance["available"], balance["held"]) == (15, 0)
    ledger_clean()


def test_capture_racing_release_has_one_winner(service_key, ledger_clean):
    account = account_with([20])
    api = Api(service_key)
    hold = spend(api, account, "holds", 5, "gen-1")
    assert hold.status == 201, hold.body
    threads = 16

    def work(index: int) -> Reply:
        action = "capture" if index % 2 else "release"
        return Reply.of(Api(service_key).post(f"/holds/{hold.body['id']}/{action}", {}, idem=idem()))

    replies = run_concurrently(threads, work)

    assert Counter(reply.status for reply in replies) == {200: 1, 409: threads - 1}, [r.body for r in replies]
    assert {reply.error_code for reply in replies if reply.status == 409} == {"hold_not_pending"}
    (won,) = [reply for reply in replies if reply.status == 200]
    settled = Hold.objects.get(public_id=hold.body["id"])
    assert settled.status == won.body["status"]
    expected_available = 15 if settled.status == Hold.Status.CAPTURED else 20
    balance = balance_of(api, account)
    assert (balance["available"], balance["held"]) == (expected_available, 0)
    ledger_clean()


# --- 4. Many accounts, random order ------------------------------------------------------------


def test_parallel_debits_across_accounts_do_not_deadlock(service_key, ledger_clean):
    accounts = [account_with([300, 200]) for _ in range(5)]
    threads, debits_each = 16, 40

    def work(index: int) -> list[tuple[int, Reply]]:
        api = Api(service_key)
        rng = random.Random(index)
        done = []
        for n in range(debits_each):
            which = rng.randrange(len(accounts))
            done.append((which, spend(api, accounts[which], "debits", rng.randint(1, 3), f"t{index}-{n}")))
        return done

    results = [item for batch in run_concurrently(threads, work) for item in batch]

    assert len(results) == threads * debits_each
    failed = [(which, reply.status, reply.body) for which, reply in results if reply.status != 201]
    assert failed == [], failed[:5]
    spent = Counter()
    for which, reply in results:
        spent[which] += reply.body["credits"]
    api = Api(service_key)
    for which, account in enumerate(accounts):
        balance = balance_of(api, account)
        assert (balance["available"], balance["held"]) == (500 - spent[which], 0), account.public_id
        assert_never_overdrawn(account)
    ledger_clean()


# --- 7. The batch route racing single debits and other batches ---------------------------------


def batch_item(account: Account, key: str) -> dict[str, Any]:
    return {"account_id": account.public_id, "idempotency_key": key, "credits": 1, "reference": key}


def test_batches_and_single_debits_share_the_credits_without_deadlock(service_key, ledger_clean):
    """Batches lock their accounts in id order; singles lock one. Demand is twice the credits."""
    accounts = [account_with([12, 8]) for _ in range(6)]
    threads, per_thread = 8, 30

    def work(index: int) -> list[Reply]:
        api = Api(service_key)
        rng = random.Random(index)
        if index % 2 == 0:
            replies = []
            for round_ in range(3):
                picks = [rng.choice(accounts) for _ in range(per_thread // 3)]
                body = {"debits": [batch_item(a, f"b{index}-{round_}-{n}") for n, a in enumerate(picks)]}
                response = api.post("/debits/batch", body, idem=None)
                assert response.status_code == 200, response.content
                replies += [Reply(r["status"], r["body"], None) for r in response.json()["results"]]
            return replies
        return [spend(api, rng.choice(accounts), "debits", 1, f"s{index}-{n}") for n in range(per_thread)]

    replies = [reply for batch in run_concurrently(threads, work) for reply in batch]

    by_status = Counter(reply.status for reply in replies)
    assert by_status == {201: 120, 402: 120}, by_status
    for account in accounts:
        account.refresh_from_db()
        assert (account.available_credits, account.held_credits) == (0, 0)
        assert_never_overdrawn(account)
    assert Debit.objects.count() == 120
    ledger_clean()


def test_the_same_batch_sent_at_once_debits_each_key_once(service_key, ledger_clean):
    accounts = [account_with([50]) for _ in range(3)]
    body = {"debits": [batch_item(accounts[n % 3], f"same-{n}") for n in range(30)]}

    def work(index: int) -> list[dict[str, Any]]:
        response = Api(service_key).post("/debits/batch", body, idem=None)
        assert response.status_code == 200, response.content
        return response.json()["results"]

    answers = run_concurrently(6, work)

    assert Debit.objects.count() == 30
    for results in answers:
        assert [r["status"] for r in results] == [201] * 30
        assert [r["body"]["id"] for r in results] == [r["body"]["id"] for r in answers[0]]
    assert sum(not r["replayed"] for results in answers for r in results) == 30
    ledger_clean()

"""A busy service key's calls counted in blocks (accounts.ratelimit.CountLeases), as the balance
read and the debit do it (accounts.authentication.LeasedServiceCall), against the real Redis."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone

from accounts.authentication import LeasedServiceCall
from accounts.models import ServiceKey
from accounts.ratelimit import (
    LEASE_MAX,
    WINDOW_SECONDS,
    CountLeases,
    _Lease,
    count_leases,
    counter_key,
    current_window,
)
from accounts.services import hash_key, service_key_cache_key, service_key_create, service_key_revoke
from accounts.throttling import service_call_allowed
from billing.models import Debit, IdempotencyKey, LedgerEntry
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db


@pytest.fixture
def window():
    """A window with at least 50 seconds left, so that a test's calls all fall in it."""
    now = time.time()
    start = (now // WINDOW_SECONDS) * WINDOW_SECONDS
    moment = start + 5 if now - start < 30 else start + WINDOW_SECONDS + 5
    with time_machine.travel(datetime.fromtimestamp(moment, UTC), tick=True):
        yield current_window(moment)


def counter(raw: str, window: int) -> int | None:
    return cache.get(counter_key("service", hash_key(raw)[:32], window))


def test_a_busy_key_goes_to_redis_once_per_block(window, settings):
    settings.RATE_LIMITS = {"service": 10**6, "user": 0, "anon": 0}
    _, raw = service_key_create(name="gen")
    account = make_account()
    give(account, 9)
    api = Api(raw)

    answers = [api.get(f"/accounts/{account.public_id}/balance") for _ in range(100)]

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["available"] for a in answers} == {9}
    # The first call counts itself alone (the counter is not known yet), each later round trip
    # counts a block of 32: calls 2-33, 34-65, 66-97, 98-129.
    assert counter(raw, window) == 1 + 4 * LEASE_MAX


def test_a_call_drf_answers_is_counted_once(window, settings):
    settings.RATE_LIMITS = {"service": 10**6, "user": 0, "anon": 0}
    _, raw = service_key_create(name="gen")
    api = Api(raw)

    answers = [api.get("/accounts/acct_doesnotexist/balance") for _ in range(40)]

    assert {a.status_code for a in answers} == {404}
    assert counter(raw, window) == 1 + 2 * LEASE_MAX  # DRF's throttle counted none again


def test_near_the_limit_every_call_is_counted_alone(window, settings):
    settings.RATE_LIMITS = {"service": 100, "user": 0, "anon": 0}
    _, raw = service_key_create(name="gen")
    account = make_account()
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"

    statuses = [api.get(path).status_code for _ in range(102)]

    assert statuses == [200] * 100 + [429] * 2
    assert counter(raw, window) == 102


def test_the_limit_is_never_exceeded_and_few_calls_are_refused_early(window, settings):
    """Two threads keep their own blocks, as two web processes do: together they are allowed at
    most the limit, with no count number used twice, and short of it by at most a block each."""
    limit = 3000
    settings.RATE_LIMITS = {"service": limit, "user": 0, "anon": 0}
    key, raw = service_key_create(name="gen")
    # Cached as a checked key is, so the threads need no database connection of their own.
    cache.set(service_key_cache_key(hash_key(raw)), (key.pk, key.name, time.time()), 300)
    allowed: list[list[int]] = [[], []]
    failures: list[BaseException] = []

    def calls(mine: list[int]) -> None:
        try:
            for _ in range(2000):
                call = LeasedServiceCall(raw, timezone.now())
                principal = call.result((key.pk, key.name))
                assert principal.counted is not None
                if service_call_allowed(principal):
                    mine.append(principal.counted[1])
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    threads = [threading.Thread(target=calls, args=(mine,)) for mine in allowed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not failures
    numbers = allowed[0] + allowed[1]
    assert len(numbers) == len(set(numbers))
    assert max(numbers) <= limit
    assert limit - 2 * LEASE_MAX <= len(numbers) <= limit
    assert counter(raw, window) >= 4000


def test_a_key_revoked_while_its_block_has_counts_left_is_refused_at_once(window, settings):
    settings.RATE_LIMITS = {"service": 10**6, "user": 0, "anon": 0}
    key, raw = service_key_create(name="gen")
    account = make_account()
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    assert [api.get(path).status_code for _ in range(3)] == [200, 200, 200]
    block = count_leases.blocks[hash_key(raw)[:32]]
    assert block.next <= block.last  # the next call would be counted without Redis
    counted = counter(raw, window)

    # Revoked in the database only: Redis still has the key's cached entry.
    ServiceKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    refused = api.get(path)

    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "authentication_failed"
    assert counter(raw, window) == counted  # refused with a number of the block

    other_key, other_raw = service_key_create(name="other")
    other = Api(other_raw)
    assert [other.get(path).status_code for _ in range(3)] == [200, 200, 200]
    service_key_revoke(key=other_key)
    assert other.get(path).status_code == 401


def test_a_new_window_starts_with_a_call_counted_alone():
    leases = CountLeases()
    assert leases.take("k", 10) is None
    assert leases.size("k", 10, 60000) == 1
    leases.keep("k", 10, counter=1, calls=1)  # the call itself: nothing left over
    assert leases.take("k", 10) is None
    assert leases.size("k", 10, 60000) == LEASE_MAX
    assert leases.size("k", 10, 0) == LEASE_MAX  # no limit
    leases.keep("k", 10, counter=33, calls=32)
    assert [leases.take("k", 10) for _ in range(32)] == [*range(3, 34), None]
    assert leases.size("k", 10, 33 + 64 * 5 + 63) == 5  # a 64th of what is left
    assert leases.size("k", 10, 100) == 1
    assert leases.take("k", 11) is None and leases.size("k", 11, 60000) == 1


def test_a_forked_child_does_not_use_its_parents_block():
    leases = CountLeases()
    leases.keep("k", 10, counter=40, calls=32)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, b"none" if leases.take("k", 10) is None else b"took")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 8) == b"none"
    os.close(read)
    assert leases.take("k", 10) == 10  # the parent's block is intact


# --- debits: the same blocks, with the key checked by the debit's own statement ----------------

DEBIT = {"credits": 1, "reference": "gen"}


def written() -> tuple[int, int, int]:
    return Debit.objects.count(), LedgerEntry.objects.count(), IdempotencyKey.objects.count()


def debiting(settings, *, limit: int, credits: int):  # type: ignore[no-untyped-def]
    """A service key with this rate limit, an account with these credits, and the debit path."""
    settings.RATE_LIMITS = {"service": limit, "user": 0, "anon": 0}
    key, raw = service_key_create(name="gen")
    account = make_account()
    give(account, credits)
    return key, raw, account, Api(raw), f"/accounts/{account.public_id}/debits"


def test_debits_go_to_redis_once_per_block_and_are_made_as_their_key(window, settings):
    key, raw, account, api, path = debiting(settings, limit=10**6, credits=150)

    answers = [api.post(path, DEBIT, idem=f"gen-{n}") for n in range(100)]

    assert {a.status_code for a in answers} == {201}
    assert answers[-1].json()["balance"]["available"] == 50
    assert counter(raw, window) == 1 + 4 * LEASE_MAX  # as the balance reads above
    assert set(Debit.objects.values_list("actor_type", "actor_id")) == {("service", str(key.pk))}
    assert set(IdempotencyKey.objects.values_list("scope", flat=True)) == {f"svc:{key.pk}"}
    # A retry is answered from the key recorded under that scope, and counted once.
    first = answers[0]
    again = api.post(path, DEBIT, idem="gen-0")
    assert again.status_code == 201 and again.json() == first.json()
    assert Debit.objects.count() == 100
    assert counter(raw, window) == 1 + 4 * LEASE_MAX


def test_a_debit_drf_answers_is_counted_once(window, settings):
    _, raw, account, api, path = debiting(settings, limit=10**6, credits=1)

    # Not enough credits: the statement writes nothing and DRF's view answers, with the call's count.
    refused = [api.post(path, {"credits": 2, "reference": "gen"}) for _ in range(40)]
    assert {a.status_code for a in refused} == {402}
    assert counter(raw, window) == 1 + 2 * LEASE_MAX

    # A body the common debit does not read: DRF's view checks the key and counts it.
    odd = api.post(path, {"credits": 1, "reference": "gen", "metadata": {"job": "7"}})
    assert odd.status_code == 201
    assert counter(raw, window) == 1 + 2 * LEASE_MAX + 1


def test_near_the_limit_every_debit_is_counted_alone_and_none_over_it_is_made(window, settings):
    _, raw, account, api, path = debiting(settings, limit=100, credits=500)

    statuses = [api.post(path, DEBIT).status_code for _ in range(102)]

    assert statuses == [201] * 100 + [429] * 2
    assert counter(raw, window) == 102
    assert Debit.objects.count() == 100


def test_a_debit_with_a_revoked_key_and_counts_left_writes_nothing(window, settings):
    key, raw, account, api, path = debiting(settings, limit=10**6, credits=10)
    assert [api.post(path, DEBIT).status_code for _ in range(3)] == [201, 201, 201]
    block = count_leases.blocks[hash_key(raw)[:32]]
    assert block.next <= block.last  # the next call is counted without Redis
    counted, before = counter(raw, window), written()

    # Revoked in the database only: Redis still has the key's cached entry.
    ServiceKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    refused = api.post(path, DEBIT)

    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "authentication_failed"
    assert written() == before
    assert counter(raw, window) == counted
    account.refresh_from_db()
    assert account.available_credits == 7


def test_a_number_over_the_limit_is_refused_before_the_statement(window, settings):
    """Another process may have counted meanwhile, so a block can hold numbers past the limit:
    such a call is refused (429, or 401 for a revoked key) with nothing written, counted once."""
    limit = 50
    key, raw, account, api, path = debiting(settings, limit=limit, credits=10)
    ident = hash_key(raw)[:32]
    cache.set(counter_key("service", ident, window), limit + 2, 120)
    count_leases.blocks[ident] = _Lease(os.getpid(), window, limit + 1, limit + 2)
    before = written()

    over = api.post(path, DEBIT)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited"
    ServiceKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    revoked = api.post(path, DEBIT)
    assert revoked.status_code == 401

    assert written() == before
    assert counter(raw, window) == limit + 2  # both calls took numbers of the block
    assert count_leases.take(ident, window) is None


def test_a_debit_whose_key_a_concurrent_request_took_is_replayed_and_counted_once(window, settings, monkeypatch):
    """billing_spend() rolled back whole (the Idempotency-Key was recorded meanwhile), so the
    statement did not say which service key it ran as: the route reads the key from the database
    and hands the call over to DRF's view, which answers with the recorded debit."""
    import billing.api
    from billing.services.one_call import KEY_TAKEN, OneCall

    _, raw, account, api, path = debiting(settings, limit=10**6, credits=10)
    # The window's first call is counted alone; the second goes to Redis for a block, whose next
    # number the third call takes.
    assert [api.post(path, DEBIT).status_code for _ in range(2)] == [201, 201]
    real = billing.api.debit_create_keyed
    made: list[OneCall] = []

    def concurrent(**kwargs):  # type: ignore[no-untyped-def]
        made.append(real(**kwargs))  # the other request, which records the key first
        return OneCall(KEY_TAKEN, "deb_lost")

    monkeypatch.setattr(billing.api, "debit_create_keyed", concurrent)
    answer = api.post(path, DEBIT, idem="taken")

    assert answer.status_code == 201
    assert answer.json()["id"] == made[0].public_id
    assert answer.json()["balance"]["available"] == 7
    assert Debit.objects.count() == 3
    assert counter(raw, window) == 1 + LEASE_MAX  # counted once, with a number of the block

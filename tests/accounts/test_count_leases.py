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
from accounts.ratelimit import (
    LEASE_MAX,
    WINDOW_SECONDS,
    CountLeases,
    counter_key,
    current_window,
)
from accounts.services import hash_key, service_key_cache_key, service_key_create
from accounts.throttling import service_call_allowed
from tests.billing.factories import make_account
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

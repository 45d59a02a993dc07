"""The one rate limiter (accounts.ratelimit.Limiter), against the real Redis: a fixed window per
caller, one script call per count, shared by threads and processes. (Redis failing:
tests/accounts/test_redis_outage.py.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone

from accounts import key_cache, ratelimit
from accounts.models import ServiceKey
from accounts.ratelimit import WINDOW_SECONDS, Limiter, counter_key, current_window, limiter
from accounts.services import hash_key, service_key_create
from config.settings import base as base_settings
from tests.billing.factories import make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db


@pytest.fixture
def window() -> Iterator[int]:
    """The current window, 15 seconds into it, with the clock running (45 seconds left)."""
    start = (time.time() // WINDOW_SECONDS + 1) * WINDOW_SECONDS
    with time_machine.travel(datetime.fromtimestamp(start + 15, UTC), tick=True):
        yield current_window(start)


def service_counter(raw: str, window: int) -> int | None:
    return cache.get(counter_key("service", hash_key(raw)[:32], window))


def test_a_service_call_is_counted_once_and_refused_over_the_limit_until_the_window_ends(window, settings):
    settings.RATE_LIMITS = {"service": 3, "user": 0, "anon": 0}
    _, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{make_account().public_id}/balance"

    statuses = [api.get(path).status_code for _ in range(3)]
    refused = api.get(path)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 44 <= int(refused["Retry-After"]) <= 45
    assert service_counter(raw, window) == 4  # authentication counted each call; the throttle did not
    with time_machine.travel(datetime.fromtimestamp((window + 1) * WINDOW_SECONDS, UTC)):
        assert api.get(path).status_code == 200


def test_concurrent_counts_share_one_counter_with_no_number_twice():
    """Threads have their own cache connections, as web processes do: Redis counts for all."""
    numbers: list[int] = []
    failures: list[BaseException] = []

    ident = f"busy-{uuid.uuid4().hex}"

    def count() -> None:
        try:
            for _ in range(300):
                counted, _ = limiter.count("user", ident)
                numbers.append(counted.count)
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    threads = [threading.Thread(target=count) for _ in range(4)]
    # One window for all the calls: a run that straddled two would number each from 1.
    with time_machine.travel(datetime(2031, 3, 14, 12, 0, 20, tzinfo=UTC), tick=False):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert not failures
    assert sorted(numbers) == list(range(1, 1201))


def test_without_redis_the_local_memory_cache_counts_and_holds_the_key(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.RATE_LIMITS = {"service": 2, "user": 0, "anon": 0}
    api = Api(service_key_create(name="gen")[1])
    path = f"/accounts/{make_account().public_id}/balance"

    assert [api.get(path).status_code for _ in range(3)] == [200, 200, 429]


def test_a_redis_that_hangs_lets_the_call_through_after_the_socket_timeout_not_a_held_worker(private_redis, settings):
    settings.CACHES = {
        "default": {**base_settings.CACHES["default"], "LOCATION": private_redis.url},
    }
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "service": 1000}  # every call counted in Redis
    api = Api(service_key_create(name="gen")[1])
    path = f"/accounts/{make_account().public_id}/balance"
    assert api.get(path).status_code == 200
    private_redis.hang()
    try:
        started = time.monotonic()
        hung = api.get(path)
        waited = time.monotonic() - started
    finally:
        private_redis.resume()
    # The limiter's read timed out (one second), the key was read from the database: served.
    assert hung.status_code == 200
    assert 0.9 < waited < 5, waited


def test_processes_counting_in_blocks_share_one_counter_and_never_admit_more_than_the_limit(settings):
    """Each Limiter is one process's: it reserves blocks of counts (4 at a limit of 4,000) and
    hands them out; together they number every call once, and the limit holds."""
    settings.RATE_LIMITS = {"service": 4000, "user": 0, "anon": 0}
    processes = [Limiter(), Limiter(), Limiter()]
    ident = f"busy-{uuid.uuid4().hex}"
    with time_machine.travel(datetime(2031, 3, 14, 12, 0, 20, tzinfo=UTC), tick=False):
        numbers = [processes[n % 3].count("service", ident)[0].count for n in range(4100)]
        allowed = sum(processes[n % 3].check("service", ident).allowed for n in range(10))
        in_redis = cache.get(counter_key("service", ident, current_window(time.time())))

    assert len(set(numbers)) == 4100 and min(numbers) == 1
    assert max(numbers) <= 4100 + 3 * 3  # at most a block's unused rest in each other process
    assert allowed == 0
    assert in_redis % 4 == 0 and in_redis >= 4110  # reserved four at a time


def test_a_key_revoked_in_another_process_is_refused_here_once_the_block_ends(settings, monkeypatch):
    """A block of counts holds the key's entry read with it for BLOCK_SECONDS: a tombstone written
    by another process is read when this one reserves its next block."""
    monkeypatch.setattr(ratelimit, "BLOCK_SECONDS", 0.5)
    settings.RATE_LIMITS = {"service": 32_000, "user": 0, "anon": 0}
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{make_account().public_id}/balance"
    assert api.get(path).status_code == 200
    started = time.monotonic()
    ServiceKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # the other process's revocation:
    cache.set(key_cache.cache_key(key.key_hash), key_cache.REVOKED)  # its commit and its tombstone

    within = api.get(path).status_code
    assert time.monotonic() - started < 0.5
    time.sleep(0.5)
    assert (within, api.get(path).status_code) == (200, 401)

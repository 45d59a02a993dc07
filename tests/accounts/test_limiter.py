"""The one rate limiter (accounts.ratelimit.Limiter), against the real Redis: a fixed window per
caller, one script call per count, shared by threads and processes, and 503 without Redis."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import time_machine
from django.core.cache import cache

from accounts.ratelimit import WINDOW_SECONDS, counter_key, current_window, limiter
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


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start (the shared one stays up)."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed on PATH"
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def test_redis_down_is_503_service_unavailable_and_serving_resumes_when_it_is_back(private_redis, settings, user_api):
    settings.CACHES = {"default": {"BACKEND": "config.cache.ReusedClientRedisCache", "LOCATION": private_redis.url}}
    api = Api(service_key_create(name="gen")[1])
    user, _ = user_api
    path = f"/accounts/{make_account().public_id}/balance"

    def answers() -> list[int]:
        login = {"email": "nobody@example.com", "password": "wrong-password"}
        responses = [api.get(path), user.get("/me"), Api().post("/auth/token", login, idem=None)]
        return [response.status_code for response in responses]

    assert answers() == [200, 200, 401]
    private_redis.stop()
    down = api.get(path)
    assert down.status_code == 503 and down.json()["error"]["code"] == "service_unavailable"
    assert answers() == [503, 503, 503]
    private_redis.start()  # empty: the key is read from the database again
    assert answers() == [200, 200, 401]


def test_a_redis_that_hangs_is_503_after_the_socket_timeout_not_a_held_worker(private_redis, settings):
    settings.CACHES = {
        "default": {**base_settings.CACHES["default"], "LOCATION": private_redis.url},
    }
    api = Api(service_key_create(name="gen")[1])
    path = f"/accounts/{make_account().public_id}/balance"
    assert api.get(path).status_code == 200
    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)  # up, but answers nothing
    try:
        started = time.monotonic()
        hung = api.get(path)
        waited = time.monotonic() - started
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    assert hung.status_code == 503 and hung.json()["error"]["code"] == "service_unavailable"
    assert 0.9 < waited < 5, waited

"""The one rate limiter: a fixed one-minute window per caller, counted in the shared cache.

Every route's throttle (accounts.throttling) asks `limiter`, and a service key's authentication
has it count the call while it reads the key's cache entry, in the same Redis command, so a
service call makes one round trip to Redis. With Redis the count is one call of a Lua script
registered with redis-py (a `Script`: EVALSHA on the cache's connection pool, the script loaded
again by redis-py when the server has lost it). Without Redis (the embedded `make run`), Django's
local-memory cache counts for its one process.

Redis unreachable (down, or not answering within the cache's socket timeout): PostgreSQL is the
source of truth and spending goes on, so by default the limit fails open (the call is let through
uncounted); `RATE_LIMIT_FAIL_CLOSED` refuses it with 503 `service_unavailable` instead. Either
way the failure is counted in /metrics and logged at most once a minute (config/outages.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from redis.commands.core import Script
from redis.exceptions import RedisError

from config.errors import ApiError
from config.outages import report_failure

WINDOW_SECONDS = 60
# A window's counter outlives the window, so a late call of it still finds the count.
COUNTER_SECONDS = 2 * WINDOW_SECONDS

# KEYS[1], the caller's counter for the window, incremented (its expiry set once, as EXPIRE NX
# does); KEYS[2], when given, read in the same command: a service key's cached entry.
_COUNT_AND_READ = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
if KEYS[2] then
    return {count, redis.call('GET', KEYS[2])}
end
return {count}
"""


@dataclass(frozen=True)
class Counted:
    """A call counted in its caller's window: `count` is the window's counter with it."""

    window: int
    count: int


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    # Seconds until the counted window ends (a refused caller may retry then).
    retry_after: float


def counter_key(kind: str, ident: str, window: int) -> str:
    return f"rl:{kind}:{ident}:{window}"


def current_window(now: float) -> int:
    return int(now // WINDOW_SECONDS)


class Limiter:
    """Per-caller limits (settings.RATE_LIMITS, calls a minute per kind of caller: `service`,
    `user`, `anon`), shared by every process through the cache."""

    def __init__(self) -> None:
        self._script: Script | None = None

    def check(self, kind: str, ident: str, *, counted: Counted | None = None) -> Verdict:
        """Whether this call of `ident` is within its kind's limit. It is counted here unless
        `counted` says it was already, in the current window (a service key's authentication)."""
        limit = settings.RATE_LIMITS.get(kind, 0)
        if not limit:
            return Verdict(allowed=True, retry_after=0.0)
        now = time.time()
        if counted is None or counted.window != current_window(now):
            counted, _ = self.count(kind, ident)
        return Verdict(allowed=counted.count <= limit, retry_after=(counted.window + 1) * WINDOW_SECONDS - now)

    def count(self, kind: str, ident: str, *, read: str | None = None) -> tuple[Counted, Any]:
        """Count one call of `ident` in the current window, and read the cache's value under
        `read` (None when absent or not asked for), in one round trip."""
        window = current_window(time.time())
        counter = counter_key(kind, ident, window)
        backend = caches["default"]
        try:
            if isinstance(backend, RedisCache):
                count, value = self._count_in_redis(backend, counter, read)
            else:
                count, value = _count_in_process(backend, counter, read)
        except RedisError as error:
            limit_unavailable(error)
            return Counted(window=window, count=0), None  # failing open: not counted, nothing read
        return Counted(window=window, count=count), value

    def _count_in_redis(self, backend: RedisCache, counter: str, read: str | None) -> tuple[int, Any]:
        client = backend._cache.get_client(write=True)
        if self._script is None:  # the SHA1 is computed once; any client may run it
            self._script = client.register_script(_COUNT_AND_READ)
        # make_key, not make_and_validate_key: the keys are ours (hex digests and numbers), and
        # the validation is a per-character check for memcached.
        keys = [backend.make_key(counter)] if read is None else [backend.make_key(counter), backend.make_key(read)]
        reply = self._script(keys=keys, args=[COUNTER_SECONDS], client=client)
        value = reply[1] if len(reply) > 1 else None
        # The value as Django's cache.get() would return it.
        serializer = backend._cache._serializer  # type: ignore[attr-defined]
        return int(reply[0]), (None if value is None else serializer.loads(value))


def _count_in_process(backend: BaseCache, counter: str, read: str | None) -> tuple[int, Any]:
    # add() is a no-op when the key exists; incr() is atomic.
    backend.add(counter, 0, timeout=COUNTER_SECONDS)
    try:
        count = backend.incr(counter)
    except ValueError:  # evicted between add and incr
        backend.set(counter, 1, timeout=COUNTER_SECONDS)
        count = 1
    return count, (None if read is None else backend.get(read))


def limit_unavailable(error: RedisError) -> None:
    """The limiter could not reach Redis: counted and logged; with RATE_LIMIT_FAIL_CLOSED the call
    is refused with 503 service_unavailable (retry), otherwise it goes on uncounted."""
    report_failure("redis", "rate_limit", error)
    if settings.RATE_LIMIT_FAIL_CLOSED:
        raise ApiError(503, "service_unavailable", "A service the API depends on is unavailable; retry.") from error


limiter = Limiter()

"""The one rate limiter: a fixed one-minute window per caller, counted in the shared cache.

Every route's throttle (accounts.throttling) asks `limiter`, and a service key's authentication
has it count the call while it reads the key's cache entry, in the same Redis command, so a
service call makes one round trip to Redis. With Redis the count is one call of a Lua script
registered with redis-py (a `Script`: EVALSHA on the cache's connection pool, the script loaded
again by redis-py when the server has lost it). Without Redis (the embedded `make run`), Django's
local-memory cache counts for its one process.

A caller with a large limit (a service key: 60,000 a minute by default) is counted in blocks: one
round trip reserves the next counts of its window for this process, and the process hands them
out one per call, with the value read in that round trip, for at most BLOCK_SECONDS. A busy key
then costs one Redis call per block instead of one per call. The count stays shared and never
admits more than the limit; it may refuse a little early, by the counts other processes hold
unused (at most MAX_BLOCK - 1 each, and a block is at most a thousandth of the limit), and a key
revoked elsewhere is refused by this process once its block ends (BLOCK_SECONDS).

Redis unreachable (down, or not answering within the cache's socket timeout): PostgreSQL is the
source of truth and spending goes on, so by default the limit fails open (the call is let through
uncounted); `RATE_LIMIT_FAIL_CLOSED` refuses it with 503 `service_unavailable` instead. Either
way the failure is counted in /metrics and logged at most once a minute (config/outages.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache
from redis.commands.core import Script
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

from config.errors import ApiError
from config.outages import report_failure

WINDOW_SECONDS = 60
# A window's counter outlives the window, so a late call of it still finds the count.
COUNTER_SECONDS = 2 * WINDOW_SECONDS

# Counts reserved by one round trip: a thousandth of the limit, from 1 (every call counted in
# Redis, as for users and addresses) to MAX_BLOCK; and how long a block and its read value serve.
MAX_BLOCK = 32
BLOCK_SECONDS = 1.0
# Callers with blocks remembered by one process; past this many the oldest are dropped.
MAX_BLOCKS = 4096

# KEYS[1], the caller's counter for the window, raised by ARGV[2] (its expiry set once, as
# EXPIRE NX does); KEYS[2], when given, read in the same command: a service key's cached entry.
_COUNT_AND_READ = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
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


@dataclass
class _Block:
    """Counts `next`..`last` of `window`, reserved by this process, and the value read with them."""

    window: int
    read: str | None
    next: int
    last: int
    value: Any
    until: float  # time.monotonic() after which the block is not used

    def take(self, window: int, read: str | None) -> int | None:
        if self.window != window or self.read != read or self.next > self.last or time.monotonic() >= self.until:
            return None
        self.next += 1
        return self.next - 1


def block_size(limit: int) -> int:
    return max(1, min(MAX_BLOCK, limit // 1000))


def counter_key(kind: str, ident: str, window: int) -> str:
    return f"rl:{kind}:{ident}:{window}"


def current_window(now: float) -> int:
    return int(now // WINDOW_SECONDS)


class Limiter:
    """Per-caller limits (settings.RATE_LIMITS, calls a minute per kind of caller: `service`,
    `user`, `anon`), shared by every process through the cache."""

    def __init__(self) -> None:
        self._script: Script | None = None
        self._blocks: dict[tuple[str, str], _Block] = {}
        self._blocks_lock = threading.Lock()

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
        `read` (None when absent or not asked for): from this process's block when it holds one,
        otherwise in one round trip."""
        window = current_window(time.time())
        size = block_size(settings.RATE_LIMITS.get(kind, 0))
        if size > 1:
            with self._blocks_lock:
                block = self._blocks.get((kind, ident))
                count = block.take(window, read) if block is not None else None
            if count is not None:
                return Counted(window=window, count=count), block.value  # type: ignore[union-attr]
        counter = counter_key(kind, ident, window)
        backend = caches["default"]
        try:
            if isinstance(backend, RedisCache):
                last, value = self._count_in_redis(backend, counter, read, size)
            else:
                last, value = _count_in_process(backend, counter, read, size)
        except RedisError as error:
            limit_unavailable(error)
            return Counted(window=window, count=0), None  # failing open: not counted, nothing read
        if size > 1:
            until = time.monotonic() + BLOCK_SECONDS
            self._keep(kind, ident, _Block(window, read, next=last - size + 2, last=last, value=value, until=until))
        return Counted(window=window, count=last - size + 1), value

    def _keep(self, kind: str, ident: str, block: _Block) -> None:
        with self._blocks_lock:
            if len(self._blocks) >= MAX_BLOCKS:
                del self._blocks[next(iter(self._blocks))]
            self._blocks[(kind, ident)] = block

    def note_read(self, kind: str, ident: str, read: str, value: Any) -> None:
        """`value` is what this process just learned of `read` (a service key checked in the
        database): its block of the caller, if it reads that key, serves it from now on, until the
        block ends."""
        with self._blocks_lock:
            block = self._blocks.get((kind, ident))
            if block is not None and block.read == read:
                block.value = value

    def forget(self, kind: str | None = None, ident: str | None = None) -> None:
        """Drop this process's blocks: of one caller (a key just revoked here), or all."""
        with self._blocks_lock:
            if kind is None:
                self._blocks.clear()
            else:
                self._blocks.pop((kind, ident or ""), None)

    def _count_in_redis(self, backend: RedisCache, counter: str, read: str | None, size: int) -> tuple[int, Any]:
        client = backend._cache.get_client(write=True)
        if self._script is None:  # the SHA1 is computed once; any client may run it
            self._script = client.register_script(_COUNT_AND_READ)
        # make_key, not make_and_validate_key: the keys are ours (hex digests and numbers), and
        # the validation is a per-character check for memcached.
        keys = [backend.make_key(counter)] if read is None else [backend.make_key(counter), backend.make_key(read)]
        reply = self._script(keys=keys, args=[COUNTER_SECONDS, size], client=client)
        value = reply[1] if len(reply) > 1 else None
        # The value as Django's cache.get() would return it.
        serializer = backend._cache._serializer  # type: ignore[attr-defined]
        return int(reply[0]), (None if value is None else serializer.loads(value))


def _count_in_process(backend: BaseCache, counter: str, read: str | None, size: int) -> tuple[int, Any]:
    # add() is a no-op when the key exists; incr() is atomic.
    backend.add(counter, 0, timeout=COUNTER_SECONDS)
    try:
        count = backend.incr(counter, size)
    except ValueError:  # evicted between add and incr
        backend.set(counter, size, timeout=COUNTER_SECONDS)
        count = size
    return count, (None if read is None else backend.get(read))


def client_address(request) -> str:  # type: ignore[no-untyped-def]
    """The caller's address for every per-address limit (the API's anonymous calls and failed
    authentications, the waitlist's, login lockouts): REMOTE_ADDR, or, behind
    TRUSTED_PROXY_COUNT proxies (DRF's NUM_PROXIES), the address the outermost of them saw in
    X-Forwarded-For; a client's own X-Forwarded-For entries further left are never read, so
    rotating them lifts no limit."""
    return BaseThrottle().get_ident(request)


def limit_unavailable(error: RedisError) -> None:
    """The limiter could not reach Redis: counted and logged; with RATE_LIMIT_FAIL_CLOSED the call
    is refused with 503 service_unavailable (retry), otherwise it goes on uncounted."""
    report_failure("redis", "rate_limit", error)
    if settings.RATE_LIMIT_FAIL_CLOSED:
        raise ApiError(503, "service_unavailable", "A service the API depends on is unavailable; retry.") from error


limiter = Limiter()

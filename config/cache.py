"""Django's Redis cache, keeping one redis-py client per connection pool.

Django's RedisCacheClient builds a new `redis.Redis` object for every cache call; with redis-py
8 that costs more than the round trip itself (each client builds its table of response
callbacks). A client is thread-safe and only wraps its pool, so one per pool is kept and reused.

A service request's key check and rate-limit count (start_get_and_count) go further: one script
call on a connection each thread keeps for it, packed, sent and read directly, its reply left to
be read later so that a caller can overlap it with a database read.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A service request's authentication and rate limit in one command: the key's cached entry, and
# the window's counter incremented by ARGV[2] calls (its expiry set once, as EXPIRE NX does).
_GET_AND_COUNT = """
local value = redis.call('GET', KEYS[1])
local count = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1], 'NX')
return {value, count}
"""
_GET_AND_COUNT_SHA = hashlib.sha1(_GET_AND_COUNT.encode()).hexdigest()


# EVALSHA <sha> 2 <key> <counter> <ttl> <calls> in the Redis protocol (RESP: an array of bulk
# strings), its constant head packed once.
_EVALSHA_HEAD = b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n2\r\n" % _GET_AND_COUNT_SHA.encode()

# A script call: (cache key, counter key, counter timeout, calls to count).
ScriptCall = tuple[str, str, int, int]


def _pack_get_and_count(value_key: str, counter_key: str, counter_timeout: int, calls: int) -> bytes:
    value, counter, ttl, amount = value_key.encode(), counter_key.encode(), b"%d" % counter_timeout, b"%d" % calls
    return _EVALSHA_HEAD + b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(value),
        value,
        len(counter),
        counter,
        len(ttl),
        ttl,
        len(amount),
        amount,
    )


class PendingCount:
    """A start_get_and_count() call sent to Redis, its reply not read yet."""

    def __init__(self, cache: ReusedClientRedisCache, client: Any, connection: Any, call: ScriptCall):
        self._cache, self._client, self._connection, self._call = cache, client, connection, call

    def result(self) -> tuple[Any, int]:
        """The cached value (None if absent) and the counter after the increment."""
        connection, self._connection = self._connection, None
        try:
            if connection is None:
                raise RedisConnectionError("not sent")
            raw, count = self._cache._read_script_reply(connection, self._call)
        except (RedisConnectionError, RedisTimeoutError):
            # A kept connection can be stale (the server restarted or closed it): once more on a
            # new one, as redis-py's own retry would.
            raw, count = self._cache._call_script(self._client, self._call)
        serializer = self._cache._cache._serializer  # type: ignore[attr-defined]
        return (None if raw is None else serializer.loads(raw)), int(count)

    def abandon(self) -> None:
        """Give up on the reply: the connection, whose next reply is this one, is closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._cache._drop(connection)


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))  # type: ignore[attr-defined]
        return client


class ReusedClientRedisCache(RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
        self._local = threading.local()

    def start_get_and_count(self, key: str, counter: str, counter_timeout: int, calls: int = 1) -> PendingCount:
        """`get(key)` and `calls` added to `counter` (created with `counter_timeout`) in one round
        trip, what a request's authentication and rate limit need together: sent now, read by
        the result's result(), so that the caller can do other work (a database read) while Redis
        answers. The caller must call result() or abandon() before this thread's next call.

        It is one script call (EVALSHA) on a connection this thread keeps: redis-py's per-call
        machinery (taking a connection from the pool and giving it back, retries, its
        instrumentation) costs several times the round trip, and every service request pays it.
        """
        # Both keys are the caller's own (hex digests and numbers): Django's per-character check
        # of them for memcached is skipped.
        call = (self.make_key(key), self.make_key(counter), counter_timeout, calls)
        client = self._cache.get_client(call[0], write=True)
        try:
            connection = self._send_script(client, call)
        except (RedisConnectionError, RedisTimeoutError):
            return PendingCount(self, client, None, call)  # result() makes the call once more
        return PendingCount(self, client, connection, call)

    def _call_script(self, client: Any, call: ScriptCall) -> Any:
        return self._read_script_reply(self._send_script(client, call), call)

    def _send_script(self, client: Any, call: ScriptCall) -> Any:
        """Send the script call on the kept connection, packed here and without redis-py's
        health check (a PING first when the connection was idle): a stale connection fails the
        call, which the caller makes once more."""
        connection = self._kept_connection(client)
        try:
            connection.send_packed_command([_pack_get_and_count(*call)], check_health=False)
        except BaseException:
            self._drop(connection)
            raise
        return connection

    def _read_script_reply(self, connection: Any, call: ScriptCall) -> Any:
        try:
            try:
                return connection.read_response()
            except NoScriptError:  # a new or flushed server: load the script with the call
                connection.send_command("EVAL", _GET_AND_COUNT, 2, *call)
                return connection.read_response()
        except BaseException:
            self._drop(connection)
            raise

    def _drop(self, connection: Any) -> None:
        """A connection in an unknown state is never reused: the next call opens a new one."""
        kept = getattr(self._local, "connection", None)
        if kept is not None and kept[2] is connection:
            del self._local.connection
        connection.disconnect()

    def _kept_connection(self, client: Any) -> Any:
        kept = getattr(self._local, "connection", None)
        if kept is None or kept[0] != os.getpid() or kept[1] is not client:
            # Made with the pool's settings but kept out of it (after a fork, the child makes its own).
            pool = client.connection_pool
            kept = (os.getpid(), client, pool.connection_class(**pool.connection_kwargs))
            self._local.connection = kept
        return kept[2]

    def count(self, counter: str, counter_timeout: int) -> int:
        """Increment `counter` (created with `counter_timeout`) in one round trip."""
        counter_key = self.make_and_validate_key(counter)
        pipeline = self._cache.get_client(counter_key, write=True).pipeline(transaction=False)
        pipeline.incr(counter_key)
        pipeline.expire(counter_key, counter_timeout, nx=True)
        count, _ = pipeline.execute()
        return int(count)

"""Django's Redis cache, keeping one redis-py client per connection pool.

Django's RedisCacheClient builds a new `redis.Redis` object for every cache call; with redis-py
8 that costs more than the round trip itself (each client builds its table of response
callbacks). A client is thread-safe and only wraps its pool, so one per pool is kept and reused.

A service request's key check and rate-limit count (get_and_count) go further: one script call
on a connection each thread keeps for it, sent and read directly (about 0.02 ms of CPU against
0.08 ms for the same three commands as a redis-py pipeline, measured in-process).
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
# the window's counter incremented (its expiry set once, as EXPIRE NX does).
_GET_AND_COUNT = """
local value = redis.call('GET', KEYS[1])
local count = redis.call('INCRBY', KEYS[2], 1)
redis.call('EXPIRE', KEYS[2], ARGV[1], 'NX')
return {value, count}
"""
_GET_AND_COUNT_SHA = hashlib.sha1(_GET_AND_COUNT.encode()).hexdigest()


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

    def get_and_count(self, key: str, counter: str, counter_timeout: int) -> tuple[Any, int]:
        """`get(key)` and an increment of `counter` (created with `counter_timeout`), in one
        round trip: what a request's authentication and rate limit need together.

        It is one script call (EVALSHA) on a connection this thread keeps: redis-py's per-call
        machinery (taking a connection from the pool and giving it back, retries, its
        instrumentation) costs several times the round trip, and every service request pays it.
        """
        value_key = self.make_and_validate_key(key)
        counter_key = self.make_and_validate_key(counter)
        client = self._cache.get_client(value_key, write=True)
        try:
            raw, count = self._call_script(client, value_key, counter_key, counter_timeout)
        except (RedisConnectionError, RedisTimeoutError):
            # A kept connection can be stale (the server restarted or closed it): once more on a
            # new one, as redis-py's own retry would.
            raw, count = self._call_script(client, value_key, counter_key, counter_timeout)
        serializer = self._cache._serializer  # type: ignore[attr-defined]
        return (None if raw is None else serializer.loads(raw)), int(count)

    def _call_script(self, client: Any, value_key: str, counter_key: str, counter_timeout: int) -> Any:
        connection = self._kept_connection(client)
        try:
            try:
                connection.send_command("EVALSHA", _GET_AND_COUNT_SHA, 2, value_key, counter_key, counter_timeout)
                return connection.read_response()
            except NoScriptError:  # a new or flushed server: load the script with the call
                connection.send_command("EVAL", _GET_AND_COUNT, 2, value_key, counter_key, counter_timeout)
                return connection.read_response()
        except BaseException:
            # A connection in an unknown state is never reused: the next call opens a new one.
            self._local.__dict__.pop("connection", None)
            connection.disconnect()
            raise

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

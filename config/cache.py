"""Django's Redis cache, keeping one redis-py client per connection pool.

Django's RedisCacheClient builds a new `redis.Redis` object for every cache call; with redis-py
8 that costs more than the round trip itself (each client builds its table of response
callbacks). A client is thread-safe and only wraps its pool, so one per pool is kept and reused.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


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

    def get_and_count(self, key: str, counter: str, counter_timeout: int) -> tuple[Any, int]:
        """`get(key)` and an increment of `counter` (created with `counter_timeout`), in one
        round trip: what a request's authentication and rate limit need together."""
        value_key = self.make_and_validate_key(key)
        counter_key = self.make_and_validate_key(counter)
        client = self._cache.get_client(value_key, write=True)
        pipeline = client.pipeline(transaction=False)
        pipeline.get(value_key)
        pipeline.incr(counter_key)
        pipeline.expire(counter_key, counter_timeout, nx=True)
        raw, count, _ = pipeline.execute()
        serializer = self._cache._serializer  # type: ignore[attr-defined]
        return (None if raw is None else serializer.loads(raw)), int(count)

    def count(self, counter: str, counter_timeout: int) -> int:
        """Increment `counter` (created with `counter_timeout`) in one round trip."""
        counter_key = self.make_and_validate_key(counter)
        pipeline = self._cache.get_client(counter_key, write=True).pipeline(transaction=False)
        pipeline.incr(counter_key)
        pipeline.expire(counter_key, counter_timeout, nx=True)
        count, _ = pipeline.execute()
        return int(count)

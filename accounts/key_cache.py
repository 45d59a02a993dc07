"""Service keys checked against the database, remembered in the shared cache for a few seconds.

The database is the truth about a key: an entry in the cache only says "the database accepted
this key at `checked`", and is trusted for SERVICE_KEY_CACHE_SECONDS after that instant, by the
application's clock, whatever Redis does with its expiry. An entry is never extended: once it
is too old the database is asked again. Revocation writes `revoked_at`, then replaces the entry
with a tombstone; entries are written only where none exists (SET NX), so a check that read the
database before the revocation and writes after the tombstone cannot bring the key back. If
the tombstone cannot be written (Redis unreachable from the revoking process), the key is
refused everywhere once its entry is SERVICE_KEY_CACHE_SECONDS old.

A busy key's entry is read with its calls' count (accounts/ratelimit.py), so a process that holds
a block of counts also holds the entry read with it, for at most BLOCK_SECONDS: a key revoked in
another process is refused within that second, the revoking process's own blocks at once. A
check this process makes in the database while it holds a block goes into the block (remember).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from config.outages import report_failure

from .ratelimit import limiter

logger = logging.getLogger(__name__)

REVOKED: Final = "revoked"
# A tombstone outlives every check that was in flight when the key was revoked.
TOMBSTONE_SECONDS = 3600


def cache_key(key_hash: str) -> str:
    return f"svckey:{key_hash}"


def rate_ident(key_hash: str) -> str:
    """The key's caller in the rate limit (known before the key is looked up)."""
    return key_hash[:32]


def trusted(entry: Any, now: datetime) -> tuple[int, str] | str | None:
    """What the cache says about a key: (id, name) while its check is recent enough, REVOKED for
    a tombstone, None when the database must be asked."""
    if entry == REVOKED:
        return REVOKED
    if not isinstance(entry, tuple) or len(entry) != 3:
        return None
    key_id, name, checked = entry
    if abs(now.timestamp() - checked) >= settings.SERVICE_KEY_CACHE_SECONDS:
        return None
    return key_id, name


def remember(key_hash: str, key_id: int, name: str, *, checked: datetime) -> None:
    """Remember that the database accepted the key at `checked` (read before the query): in the
    shared cache unless an entry or a tombstone is there already, and in this process's block of
    the key's counts, as if read with them.

    The block takes the check even when the shared entry was there (another process checked the
    key too): otherwise a block holding an entry too old to trust would send every call it
    serves to the database. It trusts the check until the block ends, as it trusts what it read."""
    if not settings.SERVICE_KEY_CACHE_SECONDS:
        return
    entry = (key_id, name, checked.timestamp())
    try:
        cache.add(cache_key(key_hash), entry, settings.SERVICE_KEY_CACHE_SECONDS)
    except RedisError as error:  # the next call asks the database again
        report_failure("redis", "key_cache", error)
        return
    limiter.note_read("service", rate_ident(key_hash), cache_key(key_hash), entry)


def forget(key_hash: str) -> bool:
    """Refuse the key from the cache at once (after its revocation was committed); False when
    Redis could not be told, in which case the key's entry lapses within SERVICE_KEY_CACHE_SECONDS."""
    limiter.forget("service", rate_ident(key_hash))
    try:
        cache.set(cache_key(key_hash), REVOKED, TOMBSTONE_SECONDS)
    except RedisError as error:
        report_failure("redis", "key_revocation", error)
        logger.error(
            "a revoked service key could not be dropped from the cache (%s); it is refused within %s seconds",
            error,
            settings.SERVICE_KEY_CACHE_SECONDS,
        )
        return False
    return True

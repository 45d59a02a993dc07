"""Service keys are checked against the shared cache on the hot path, for a few seconds at a time;
the database is the truth and revocation takes the key out of the cache (accounts/key_cache.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import key_cache, ratelimit
from accounts.models import ServiceKey
from accounts.services import service_key_create, service_key_revoke
from tests.conftest import Api
from tests.private_servers import free_port

pytestmark = pytest.mark.django_db


def test_a_recently_checked_key_costs_no_query(account):
    _, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/ledger"
    assert api.get(path).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        assert api.get(path).status_code == 200

    assert queries.captured_queries
    assert not [q for q in queries.captured_queries if "accounts_servicekey" in q["sql"]]


def test_a_balance_read_is_one_statement_with_the_key_cached(account):
    _, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    assert api.get(path).status_code == 200

    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        [statement] = [q["sql"] for q in queries.captured_queries]
        assert "billing_spendable_lots" in statement and "accounts_servicekey" not in statement


def test_a_key_revoked_by_the_service_is_refused_at_once_even_when_cached(account):
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200

    service_key_revoke(key=key)

    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 401


# --- The database is the truth: the cache never outlives a revocation for long ----------------


@pytest.fixture
def key_cache_on_private_redis(private_redis, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.ReusedClientRedisCache",
            "LOCATION": private_redis.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.SERVICE_KEY_CACHE_SECONDS = 10
    return private_redis


def servicekey_queries(queries) -> list[str]:  # type: ignore[no-untyped-def]
    return [q["sql"] for q in queries.captured_queries if "accounts_servicekey" in q["sql"]]


def test_a_cached_key_is_checked_against_the_database_again_once_its_entry_is_old(account, settings):
    settings.SERVICE_KEY_CACHE_SECONDS = 10
    _, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    start = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        assert api.get(path).status_code == 200
    # (Redis's own clock does not travel: its copy of the entry stays, and each old read asks.)
    for seconds, asked in ((5, False), (9, False), (10, True), (20, True), (300, True)):
        with time_machine.travel(start + timedelta(seconds=seconds), tick=False):
            with CaptureQueriesContext(connection) as queries:
                assert api.get(path).status_code == 200
        assert bool(servicekey_queries(queries)) is asked, seconds


def test_a_block_holding_an_old_entry_asks_the_database_once_though_another_process_wrote_the_new_one(
    account, settings, monkeypatch
):
    """A busy key is counted in blocks that hold its entry (accounts/ratelimit.py). Once that entry
    is too old, one database check serves the rest of the block, even when another process's
    check already replaced the shared entry (so this process's own write does nothing)."""
    monkeypatch.setattr(ratelimit, "BLOCK_SECONDS", 60.0)  # the whole test within one block
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "service": 32_000}  # blocks of 32
    settings.SERVICE_KEY_CACHE_SECONDS = 10
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    start = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        assert api.get(path).status_code == 200  # checked in the database; the block holds the entry
    later = start + timedelta(seconds=11)
    cache.set(key_cache.cache_key(key.key_hash), (key.pk, key.name, later.timestamp()))  # another process's

    with time_machine.travel(later, tick=False), CaptureQueriesContext(connection) as queries:
        answers = [api.get(path).status_code for _ in range(5)]

    assert answers == [200] * 5
    assert len(servicekey_queries(queries)) == 1


def test_a_key_revoked_while_redis_cannot_be_told_is_refused_once_its_entry_is_old(
    account, key_cache_on_private_redis, settings
):
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    start = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        assert api.get(path).status_code == 200
        # The revoking process cannot reach Redis (a partition); the web's Redis keeps the entry.
        unreachable = f"redis://127.0.0.1:{free_port()}/0"
        with override_settings(CACHES={"default": {**settings.CACHES["default"], "LOCATION": unreachable}}):
            assert service_key_revoke(key=key) is False
        assert ServiceKey.objects.get(pk=key.pk).revoked_at is not None
    # Requests every few seconds: none renews the entry without asking the database.
    answers = []
    for seconds in (3, 6, 9, 10, 12, 60, 600):
        with time_machine.travel(start + timedelta(seconds=seconds), tick=False):
            answers.append(api.get(path).status_code)
    assert answers == [200, 200, 200, 401, 401, 401, 401]


def test_a_key_revoked_with_redis_down_is_refused_at_once(account, key_cache_on_private_redis):
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    assert api.get(path).status_code == 200
    key_cache_on_private_redis.stop()

    assert service_key_revoke(key=key) is False
    refused = api.get(path)

    assert refused.status_code == 401  # no cache to read: the database says revoked


def test_a_check_made_before_the_revocation_cannot_write_the_key_back_after_it(account):
    """The write-after-check race: a request read the key from the database, the key is revoked
    (database, then tombstone), and only then does the request write its cache entry."""
    key, raw = service_key_create(name="gen")
    checked = timezone.now()  # the racing request's database read happened here
    service_key_revoke(key=key)

    key_cache.remember(key.key_hash, key.pk, key.name, checked=checked)  # its late write

    assert Api(raw).get(f"/accounts/{account.public_id}/balance").status_code == 401


def test_the_revoke_command_says_when_the_cache_could_not_be_told(account, key_cache_on_private_redis):
    key, raw = service_key_create(name="gen")
    key_cache_on_private_redis.stop()
    out, err = StringIO(), StringIO()

    call_command("revoke_service_key", raw[:10], stdout=out, stderr=err)

    assert "Revoked service key" in out.getvalue()
    assert "within 10 seconds" in err.getvalue()

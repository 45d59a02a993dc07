"""Redis stopped under the API (a redis-server of the test's own): spending goes on, since
PostgreSQL is the truth; the limits fail open (or closed, 503, when configured); each failure is
counted in /metrics and logged at most once a minute; /readyz says Redis is degraded."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import Client

from accounts.services import service_key_create
from config import outages
from tests.accounts.factories import UserFactory
from tests.billing.factories import give, make_account
from tests.conftest import Api
from tests.test_metrics import TOKEN, scrape

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_of_its_own(private_redis, settings, monkeypatch):
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.ReusedClientRedisCache",
            "LOCATION": private_redis.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.REDIS_URL = private_redis.url
    # A limit that counts every call in Redis (no blocks of counts), so that each call meets the
    # outage; a block held when Redis stops: tests/accounts/test_limiter.py.
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "service": 1000}
    settings.METRICS_TOKEN = TOKEN
    monkeypatch.setattr(outages, "_logged", {})  # this process has logged nothing yet
    return private_redis


def failures(use: str) -> float:
    key = ("billing_dependency_failures_total", (("dependency", "redis"), ("use", use)))
    return scrape().get(key, 0.0)


def outage_lines(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records if r.name == "config.outages"]


def test_with_redis_down_debits_go_on_uncounted_and_the_failures_are_counted_and_logged_once(
    redis_of_its_own, user_api, caplog
):
    caplog.set_level(logging.WARNING)
    api = Api(service_key_create(name="gen")[1])
    account = make_account()
    give(account, 20)
    debit = f"/accounts/{account.public_id}/debits"
    assert api.post(debit, {"credits": 1, "reference": "before"}).status_code == 201
    before = failures("rate_limit")

    redis_of_its_own.stop()
    statuses = [api.post(debit, {"credits": 1, "reference": f"down-{n}"}).status_code for n in range(5)]
    user, _ = user_api
    me = user.get("/me")
    login = Api().post("/auth/token", {"email": "nobody@example.com", "password": "wrong-password"}, idem=None)
    balance = api.get(f"/accounts/{account.public_id}/balance")

    assert statuses == [201] * 5
    assert (me.status_code, login.status_code, balance.status_code) == (200, 401, 200)
    assert balance.json()["available"] == 20 - 6
    assert len(outage_lines(caplog)) == 1, outage_lines(caplog)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback per request

    redis_of_its_own.start()
    assert api.post(debit, {"credits": 1, "reference": "after"}).status_code == 201
    assert failures("rate_limit") - before == 5 + 3  # five debits, /me, the login, the balance


def test_the_outage_is_logged_again_after_a_minute_with_the_count_it_left_out(redis_of_its_own, caplog):
    caplog.set_level(logging.WARNING)
    api = Api(service_key_create(name="gen")[1])
    path = f"/accounts/{make_account().public_id}/balance"
    redis_of_its_own.stop()
    for _ in range(4):
        assert api.get(path).status_code == 200
    assert len(outage_lines(caplog)) == 1

    last, left_out = outages._logged["redis"]
    outages._logged["redis"] = (last - outages.LOG_INTERVAL_SECONDS, left_out)
    assert api.get(path).status_code == 200

    lines = outage_lines(caplog)
    assert len(lines) == 2 and "more failures since the last report" in lines[1], lines


def test_with_fail_closed_redis_down_is_503_service_unavailable_with_retry_after(redis_of_its_own, settings):
    settings.RATE_LIMIT_FAIL_CLOSED = True
    api = Api(service_key_create(name="gen")[1])
    account = make_account()
    give(account, 5)
    redis_of_its_own.stop()

    refused = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "closed"})

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert refused["Retry-After"] == "1"
    account.refresh_from_db()
    assert account.available_credits == 5


def test_with_fail_closed_redis_down_the_limited_pages_answer_the_sites_503_page(redis_of_its_own, settings, caplog):
    settings.RATE_LIMIT_FAIL_CLOSED = True
    waiting = UserFactory(email_verified_at=None)
    site = Client(raise_request_exception=False)  # as a server answers
    site.force_login(waiting)
    redis_of_its_own.stop()

    with caplog.at_level(logging.WARNING):
        pages = [site.post("/waitlist", {"email": "someone@example.com"}), site.post("/verify-email/send")]

    for page in pages:
        assert page.status_code == 503 and page["Retry-After"] == "1", page.content[:300]
        assert page["Content-Type"].startswith("text/html") and b"Temporarily unavailable" in page.content
    assert not [r for r in caplog.records if r.exc_info]  # no traceback per request
    assert len(outage_lines(caplog)) == 1


def test_readyz_reports_redis_degraded_and_stays_ready_and_503_when_limits_fail_closed(redis_of_its_own, settings):
    assert Client().get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    redis_of_its_own.stop()

    started = time.monotonic()
    degraded = Client().get("/readyz")
    took = time.monotonic() - started
    settings.RATE_LIMIT_FAIL_CLOSED = True
    closed = Client().get("/readyz")

    assert degraded.status_code == 200, degraded.json()
    assert degraded.json() == {"status": "degraded", "checks": {"database": "ok", "redis": "degraded"}}
    assert took < 1.0
    assert closed.status_code == 503
    assert closed.json() == {"status": "unavailable", "checks": {"database": "ok", "redis": "unavailable"}}


def test_readyz_answers_within_a_second_when_redis_hangs(redis_of_its_own):
    redis_of_its_own.hang()
    try:
        started = time.monotonic()
        response = Client().get("/readyz")
        took = time.monotonic() - started
    finally:
        redis_of_its_own.resume()
    assert response.status_code == 200 and response.json()["checks"]["redis"] == "degraded"
    assert took < 1.0, took

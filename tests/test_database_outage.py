"""PostgreSQL unreachable: the API answers 503 service_unavailable with Retry-After at once (no
500, no traceback in the answer), the site's pages answer their own 503 page, /readyz says so
within a second, and serving resumes when the database is back. The connection is pointed at a
loopback port nothing listens on, which is what a stopped server looks like to a client
(tests/faults stops a real one under load)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django import db
from django.db import connection
from django.test import Client

from accounts.services import service_key_create
from config.errors import api_exception_handler
from config.outages import FAILURES
from tests.billing.factories import give, make_account
from tests.conftest import Api
from tests.private_servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def database_down() -> Iterator[None]:
    """Within it, this process's connections reach no PostgreSQL."""
    params = connection.settings_dict
    saved = (params["HOST"], params["PORT"])
    connection.close()
    params["HOST"], params["PORT"] = "127.0.0.1", free_port()
    try:
        yield
    finally:
        connection.close()
        params["HOST"], params["PORT"] = saved


def assert_unavailable(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"
    assert b"Traceback" not in response.content and b"psycopg" not in response.content


def test_with_the_database_down_the_api_answers_503_service_unavailable_at_once():
    key = service_key_create(name="gen")[1]
    account = make_account()
    give(account, 5)
    api = Api(key)
    debit = f"/accounts/{account.public_id}/debits"
    assert api.post(debit, {"credits": 1, "reference": "up"}).status_code == 201
    site = Client(raise_request_exception=False)  # as a server answers: through handler500
    site.force_login(account.user)

    with database_down():
        started = time.monotonic()
        answers = [
            api.post(debit, {"credits": 1, "reference": "down"}),  # the key is cached: fails at the spend
            Api("sk_" + "x" * 43).get(f"/accounts/{account.public_id}/balance"),  # fails at the key check
            Api().post("/auth/token", {"email": "a@example.com", "password": "whatever-it-is"}, idem=None),
        ]
        page = site.get("/billing")  # the session cannot be read
        took = time.monotonic() - started

    for response in answers:
        assert_unavailable(response)
    # A person on the site gets the site's page, not the API's JSON.
    assert page.status_code == 503 and page["Retry-After"] == "1", page.content
    assert page["Content-Type"].startswith("text/html")
    assert b"Temporarily unavailable" in page.content and b"psycopg" not in page.content
    assert took < 2.0, took
    account.refresh_from_db()
    assert account.available_credits == 4


def test_readyz_answers_within_a_second_that_the_database_is_unavailable():
    with database_down():
        started = time.monotonic()
        response = Client().get("/readyz")
        took = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable"
    assert took < 1.0, took
    assert Client().get("/readyz").status_code == 200  # and ready again once it is back


def test_serving_resumes_when_the_database_is_back():
    api = Api(service_key_create(name="gen")[1])
    account = make_account()
    give(account, 5)
    path = f"/accounts/{account.public_id}/debits"
    with database_down():
        assert_unavailable(api.post(path, {"credits": 1, "reference": "r"}, idem="same-key"))

    retried = api.post(path, {"credits": 1, "reference": "r"}, idem="same-key")

    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried
    account.refresh_from_db()
    assert account.available_credits == 4


def _failures(use: str) -> float:
    return FAILURES.labels("postgresql", use)._value.get()


def test_a_lock_conflict_is_answered_503_but_counted_and_logged_as_a_conflict_not_an_outage(caplog):
    with pytest.raises(db.OperationalError) as raised, connection.cursor() as cursor:
        cursor.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END $$")
    conflicts, outages = _failures("conflict"), _failures("request")
    with caplog.at_level(logging.ERROR, logger="config.errors"):
        response = api_exception_handler(raised.value, {})
    assert (response.status_code, response["Retry-After"]) == (503, "1")
    assert response.data["error"]["code"] == "service_unavailable"
    assert (_failures("conflict"), _failures("request")) == (conflicts + 1, outages)
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [raised.value]

    with database_down(), pytest.raises(db.OperationalError) as down:
        connection.ensure_connection()
    assert api_exception_handler(down.value, {}).status_code == 503
    assert (_failures("conflict"), _failures("request")) == (conflicts + 1, outages + 1)

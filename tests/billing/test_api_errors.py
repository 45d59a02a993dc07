"""Every documented error code, produced through HTTP, in the documented shape.

Errors: {"error": {"code": "...", "message": "...", ...details}} (DESIGN.md, Errors), and the
Idempotency-Key contract: a retry replays the first answer and moves nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Account, ServiceKey
from accounts.services import service_key_create, service_key_revoke
from billing.models import Debit, Hold, IdempotencyKey, LedgerEntry
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The documented error shape; returns the `error` object for checks of its details."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert "Traceback" not in response.content.decode()
    return error


def balance_of(account: Account) -> tuple[int, int]:
    account.refresh_from_db()
    return account.available_credits, account.held_credits


def movements() -> tuple[int, int, int]:
    return Debit.objects.count(), Hold.objects.count(), LedgerEntry.objects.count()


def debit(api: Api, account: Account, body: dict[str, Any] | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
    return api.post(f"/accounts/{account.public_id}/debits", body or {"credits": 1, "reference": "r-1"}, **kwargs)


def hold(api: Api, account: Account, body: dict[str, Any] | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
    return api.post(f"/accounts/{account.public_id}/holds", body or {"credits": 2, "reference": "h-1"}, **kwargs)


# --- 400 ------------------------------------------------------------------------------------


def test_validation_error_names_the_field_and_moves_nothing(api, account):
    before = movements()
    response = debit(api, account, {"credits": 0, "reference": "r-1"})
    error = assert_error(response, 400, "validation_error")
    assert "credits" in error["fields"], error
    assert "credits" in error["message"]
    assert movements() == before
    assert balance_of(account) == (10, 0)


def test_validation_error_when_neither_operation_nor_credits_is_named(api, account):
    error = assert_error(debit(api, account, {"reference": "r-1"}), 400, "validation_error")
    assert "operation" in error["message"] and "credits" in error["message"], error
    assert balance_of(account) == (10, 0)


def test_validation_error_on_invalid_json(api, account):
    response = api.post(f"/accounts/{account.public_id}/debits", raw=b'{"credits": 1,')
    assert_error(response, 400, "validation_error")
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize(
    "path_of",
    [
        lambda acct, h, d: f"/accounts/{acct.public_id}/debits",
        lambda acct, h, d: f"/accounts/{acct.public_id}/holds",
        lambda acct, h, d: f"/holds/{h}/capture",
        lambda acct, h, d: f"/holds/{h}/release",
        lambda acct, h, d: f"/debits/{d}/refund",
    ],
    ids=["debits", "holds", "capture", "release", "refund"],
)
def test_every_credit_moving_post_requires_an_idempotency_key(api, account, path_of):
    held = hold(api, account, {"credits": 1, "reference": "h"}).json()["id"]
    spent = debit(api, account, {"credits": 1, "reference": "d"}).json()["id"]
    before = movements(), balance_of(account), IdempotencyKey.objects.count()
    body = {"credits": 1, "reference": "x"} if "accounts/" in path_of(account, held, spent) else {}
    response = api.post(path_of(account, held, spent), body, idem=None)
    error = assert_error(response, 400, "idempotency_key_required")
    assert "Idempotency-Key" in error["message"]
    assert (movements(), balance_of(account), IdempotencyKey.objects.count()) == before
    assert Hold.objects.get(public_id=held).status == Hold.Status.PENDING
    assert Debit.objects.get(public_id=spent).refunded_at is None


def test_blank_idempotency_key_counts_as_missing(api, account):
    assert_error(debit(api, account, idem="   "), 400, "idempotency_key_required")
    assert balance_of(account) == (10, 0)


# --- 401 ------------------------------------------------------------------------------------


def test_missing_authorization_header_is_401(anon, account):
    response = anon.get(f"/accounts/{account.public_id}/balance")
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Bearer"
    response = anon.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"})
    assert_error(response, 401, "authentication_failed")
    assert balance_of(account) == (10, 0)


def test_wrong_authorization_scheme_is_401(service_key, account):
    response = Api().get(f"/accounts/{account.public_id}/balance", headers={"Authorization": f"Token {service_key}"})
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Bearer"


def test_unknown_service_key_is_401(account):
    response = Api("sk_" + "x" * 43).get(f"/accounts/{account.public_id}/balance")
    assert_error(response, 401, "authentication_failed")


def test_unknown_user_token_is_401():
    response = Api("ut_" + "x" * 43).get("/me")
    assert_error(response, 401, "authentication_failed")


def test_revoked_service_key_is_401_and_moves_nothing(account):
    key, raw = service_key_create(name="soon-revoked")
    api = Api(raw)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
    service_key_revoke(key=key)
    assert ServiceKey.objects.get(pk=key.pk).revoked_at is not None
    assert_error(api.get(f"/accounts/{account.public_id}/balance"), 401, "authentication_failed")
    assert_error(debit(api, account), 401, "authentication_failed")
    assert balance_of(account) == (10, 0)


# --- 402 ------------------------------------------------------------------------------------


def test_debit_beyond_the_balance_is_402_with_available_and_requested(api, account):
    before = movements()
    error = assert_error(debit(api, account, {"credits": 11, "reference": "r"}), 402, "insufficient_credits")
    assert error["available"] == 10
    assert error["requested"] == 11
    assert movements() == before
    assert balance_of(account) == (10, 0)


def test_hold_beyond_the_balance_is_402_and_counts_held_credits_as_unavailable(api, account):
    assert hold(api, account, {"credits": 8, "reference": "h"}).status_code == 201
    error = assert_error(hold(api, account, {"credits": 3, "reference": "h2"}), 402, "insufficient_credits")
    assert (error["available"], error["requested"]) == (2, 3)
    assert balance_of(account) == (2, 8)


def test_operation_priced_beyond_the_balance_is_402(api):
    empty = make_account()
    error = assert_error(debit(api, empty, {"operation": "generation", "reference": "r"}), 402, "insufficient_credits")
    assert (error["available"], error["requested"]) == (0, 1)


# --- 403 ------------------------------------------------------------------------------------


def test_user_token_on_a_service_route_is_403(user_api, account):
    client, _ = user_api
    assert_error(client.get(f"/accounts/{account.public_id}/balance"), 403, "permission_denied")
    assert_error(debit(client, account), 403, "permission_denied")
    assert balance_of(account) == (10, 0)
    assert IdempotencyKey.objects.count() == 0


def test_service_key_on_me_is_403(api):
    assert_error(api.get("/me"), 403, "permission_denied")
    assert_error(api.get("/me/ledger"), 403, "permission_denied")


@pytest.mark.parametrize("route", ["debits", "holds"])
def test_spending_from_a_suspended_account_is_403(api, route):
    suspended = make_account(status=Account.Status.SUSPENDED)
    give(suspended, 10)
    before = movements()
    response = api.post(f"/accounts/{suspended.public_id}/{route}", {"credits": 1, "reference": "r"})
    assert_error(response, 403, "account_suspended")
    assert movements() == before
    assert balance_of(suspended) == (10, 0)


# --- 404 ------------------------------------------------------------------------------------


def test_unknown_account_is_404(api):
    assert_error(api.get("/accounts/acct_doesnotexist/balance"), 404, "not_found")
    assert_error(api.get("/accounts/acct_doesnotexist/ledger"), 404, "not_found")
    response = api.post("/accounts/acct_doesnotexist/debits", {"credits": 1, "reference": "r"})
    assert_error(response, 404, "not_found")
    response = api.post("/accounts/acct_doesnotexist/holds", {"credits": 1, "reference": "r"})
    assert_error(response, 404, "not_found")
    assert IdempotencyKey.objects.count() == 0


def test_unknown_hold_is_404(api):
    assert_error(api.get("/holds/hold_doesnotexist"), 404, "not_found")
    assert_error(api.post("/holds/hold_doesnotexist/capture", {}), 404, "not_found")
    assert_error(api.post("/holds/hold_doesnotexist/release", {}), 404, "not_found")


def test_unknown_debit_is_404(api):
    assert_error(api.post("/debits/deb_doesnotexist/refund", {}), 404, "not_found")


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/accounts", "/api/v1/", "/api/v1/holds/x/y/z"])
def test_unknown_url_under_the_api_is_404_in_the_error_shape(api, path):
    response = api.client.get(path, headers={"Authorization": f"Bearer {api.key}"})
    assert_error(response, 404, "not_found")
    response = api.client.post(path, "{}", content_type="application/json")
    assert_error(response, 404, "not_found")


def test_a_404_is_not_stored_so_the_key_can_be_used_again(api, account):
    response = api.post("/accounts/acct_doesnotexist/debits", {"credits": 1, "reference": "r"}, idem="k-404")
    assert_error(response, 404, "not_found")
    response = debit(api, account, {"credits": 1, "reference": "r"}, idem="k-404")
    assert response.status_code == 201, response.json()


# --- 409 ------------------------------------------------------------------------------------


def test_same_key_with_a_different_body_is_409_and_moves_nothing(api, account):
    assert debit(api, account, {"credits": 1, "reference": "r"}, idem="k-1").status_code == 201
    before = movements()
    response = debit(api, account, {"credits": 2, "reference": "r"}, idem="k-1")
    assert_error(response, 409, "idempotency_key_reused")
    assert "Idempotent-Replayed" not in response
    assert movements() == before
    assert balance_of(account) == (9, 0)


def test_same_key_on_a_different_account_is_409(api, account):
    other = make_account()
    give(other, 5)
    assert debit(api, account, {"credits": 1, "reference": "r"}, idem="k-2").status_code == 201
    assert_error(debit(api, other, {"credits": 1, "reference": "r"}, idem="k-2"), 409, "idempotency_key_reused")
    assert balance_of(other) == (5, 0)


def test_capture_after_release_is_409_hold_not_pending(api, account):
    held = hold(api, account).json()["id"]
    assert api.post(f"/holds/{held}/release", {}).status_code == 200
    error = assert_error(api.post(f"/holds/{held}/capture", {}), 409, "hold_not_pending")
    assert error["status"] == "released"
    assert balance_of(account) == (10, 0)
    assert Hold.objects.get(public_id=held).captured_credits == 0


def test_release_after_capture_is_409_hold_not_pending(api, account):
    held = hold(api, account).json()["id"]
    assert api.post(f"/holds/{held}/capture", {}).status_code == 200
    before = movements()
    error = assert_error(api.post(f"/holds/{held}/release", {}), 409, "hold_not_pending")
    assert error["status"] == "captured"
    assert movements() == before
    assert balance_of(account) == (8, 0)


def test_capture_after_expiry_is_409_hold_expired_and_gives_the_credits_back(api, account):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        response = hold(api, account, {"credits": 3, "reference": "h", "expires_in": 60})
        assert response.status_code == 201, response.json()
        held = response.json()["id"]
        assert balance_of(account) == (7, 3)
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        error = assert_error(api.post(f"/holds/{held}/capture", {}, idem="cap-1"), 409, "hold_expired")
        assert error["hold"] == held
        assert Hold.objects.get(public_id=held).status == Hold.Status.EXPIRED
        assert balance_of(account) == (10, 0)
        # The refusal is the stored answer for this key.
        replay = api.post(f"/holds/{held}/capture", {}, idem="cap-1")
        assert_error(replay, 409, "hold_expired")
        assert replay["Idempotent-Replayed"] == "true"
        assert balance_of(account) == (10, 0)


def test_capture_just_before_expiry_succeeds(api, account):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        held = hold(api, account, {"credits": 3, "reference": "h", "expires_in": 60}).json()["id"]
    with time_machine.travel(start + timedelta(seconds=59), tick=False):
        response = api.post(f"/holds/{held}/capture", {"credits": 2})
        assert response.status_code == 200, response.json()
        assert response.json()["status"] == "captured"
    assert balance_of(account) == (8, 0)


def test_refunding_twice_is_409_debit_already_refunded(api, account):
    spent = debit(api, account, {"credits": 4, "reference": "r"}).json()["id"]
    assert api.post(f"/debits/{spent}/refund", {}).status_code == 200
    assert balance_of(account) == (10, 0)
    before = movements()
    assert_error(api.post(f"/debits/{spent}/refund", {}), 409, "debit_already_refunded")
    assert movements() == before
    assert balance_of(account) == (10, 0)


# --- 429 ------------------------------------------------------------------------------------


def test_service_key_over_its_rate_limit_gets_429_with_retry_after(api, account, settings):
    settings.RATE_LIMITS = {"service": 3, "user": 3, "anon": 3}
    for _ in range(3):
        assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
    response = api.get(f"/accounts/{account.public_id}/balance")
    error = assert_error(response, 429, "rate_limited")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["retry_after"] == retry_after


def test_a_throttled_debit_moves_nothing_and_its_key_stays_usable(api, account, settings):
    settings.RATE_LIMITS = {"service": 1, "user": 0, "anon": 0}
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
        response = debit(api, account, {"credits": 1, "reference": "r"}, idem="k-429")
        assert_error(response, 429, "rate_limited")
        assert "Retry-After" in response
        assert balance_of(account) == (10, 0)
        assert IdempotencyKey.objects.count() == 0
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        response = debit(api, account, {"credits": 1, "reference": "r"}, idem="k-429")
        assert response.status_code == 201, response.json()
    assert balance_of(account) == (9, 0)


def test_rate_limit_is_per_service_key(api, account, settings):
    settings.RATE_LIMITS = {"service": 2, "user": 0, "anon": 0}
    other = Api(service_key_create(name="other")[1])
    for _ in range(2):
        assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
    assert_error(api.get(f"/accounts/{account.public_id}/balance"), 429, "rate_limited")
    assert other.get(f"/accounts/{account.public_id}/balance").status_code == 200


@pytest.mark.parametrize(
    "authorization", ["Bearer sk_guessed", "Bearer tok_guessed", "Basic dXNlcjpwYXNz", "Bearer \u00e9t\u00e9"]
)
def test_refused_keys_count_against_the_address_and_then_get_429(api, account, settings, authorization):
    settings.RATE_LIMITS = {"service": 0, "user": 0, "anon": 3}
    path = f"/accounts/{account.public_id}/balance"
    guesser = Api()
    for _ in range(3):
        response = guesser.get(path, headers={"Authorization": authorization})
        assert_error(response, 401, "authentication_failed")
    response = guesser.get(path, headers={"Authorization": authorization})
    error = assert_error(response, 429, "rate_limited")
    assert error["retry_after"] == int(response["Retry-After"]) >= 1
    # Anonymous calls of the address share the budget; other addresses and a valid key do not.
    assert_error(guesser.get("/operations"), 429, "rate_limited")
    other = guesser.client.get(f"/api/v1{path}", headers={"Authorization": authorization}, REMOTE_ADDR="10.9.8.7")
    assert_error(other, 401, "authentication_failed")
    assert api.get(path).status_code == 200


def _record_redis_commands(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """The name of every command any redis-py connection sends from now on (read off the bytes
    sent: each RESP command starts with `*<count>` and its name)."""
    import re

    from redis.connection import AbstractConnection

    sent: list[str] = []
    real_send = AbstractConnection.send_packed_command

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        data = command if isinstance(command, bytes) else b"".join(command)
        sent.extend(name.decode() for name in re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n", data))
        return real_send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    return sent


def test_a_service_request_reads_its_key_and_counts_itself_in_one_round_trip(api, account, monkeypatch, settings):
    """Authentication and the rate limit share one Redis command (a script); the limit still holds."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "service": 1000}  # a block of one count: every call
    api.get(f"/accounts/{account.public_id}/balance")  # caches the key (and writes last-used)
    sent = _record_redis_commands(monkeypatch)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
    assert sent == ["EVALSHA"]


def test_a_busy_keys_requests_go_to_redis_once_per_block_of_counts(api, account, monkeypatch, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "service": 32_000}  # blocks of 32 counts
    path = f"/accounts/{account.public_id}/balance"
    api.get(path)  # reserves counts 1-32 and caches the key, which the block then holds too
    sent = _record_redis_commands(monkeypatch)
    assert all(api.get(path).status_code == 200 for _ in range(40))
    assert sent == ["EVALSHA"]  # counts 2-32 from the block, then one reservation of 33-64


def test_the_one_command_survives_a_flushed_script_cache_and_a_dropped_connection(api, account, settings):
    import redis
    from django.core.cache import caches

    settings.RATE_LIMITS = {"service": 3, "user": 0, "anon": 0}
    client = caches["default"]._cache.get_client(write=True)
    path = f"/accounts/{account.public_id}/balance"
    assert api.get(path).status_code == 200
    client.script_flush()  # EVALSHA now answers NOSCRIPT: the call loads the script
    assert api.get(path).status_code == 200
    # The server closes the pool's connection the calls go over (only that one: other test
    # processes share the server); the pool notices on its next use and connects again.
    connection_id = client.client_id()
    with redis.Redis.from_url(settings.REDIS_URL) as other:
        assert other.client_kill_filter(_id=connection_id) == 1
    assert api.get(path).status_code == 200
    assert_error(api.get(path), 429, "rate_limited")  # each of the three was counted once
    assert client.client_id() != connection_id  # on a new connection


def test_user_over_its_rate_limit_gets_429(user_api, settings):
    settings.RATE_LIMITS = {"service": 0, "user": 2, "anon": 0}
    client, _ = user_api
    for _ in range(2):
        assert client.get("/me").status_code == 200
    response = client.get("/me")
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


def test_anonymous_caller_over_its_rate_limit_gets_429(anon, settings):
    settings.RATE_LIMITS = {"service": 0, "user": 0, "anon": 2}
    body = {"email": "nobody@example.com", "password": "wrong-password"}
    for _ in range(2):
        assert_error(anon.post("/auth/token", body, idem=None), 401, "authentication_failed")
    response = anon.post("/auth/token", body, idem=None)
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


# --- Idempotent replay ----------------------------------------------------------------------


def test_replay_returns_the_same_body_and_moves_credits_once(api, account):
    body = {"credits": 3, "reference": "r-replay", "metadata": {"job": "j-1"}}
    first = debit(api, account, body, idem="k-replay")
    assert first.status_code == 201, first.json()
    assert "Idempotent-Replayed" not in first
    after_first = movements()
    second = debit(api, account, body, idem="k-replay")
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert movements() == after_first
    assert Debit.objects.count() == 1
    assert balance_of(account) == (7, 0)


def test_replay_ignores_key_order_in_the_body(api, account):
    first = api.post(f"/accounts/{account.public_id}/debits", raw='{"credits": 1, "reference": "r"}', idem="k-o")
    second = api.post(f"/accounts/{account.public_id}/debits", raw='{"reference": "r", "credits": 1}', idem="k-o")
    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert balance_of(account) == (9, 0)


@pytest.mark.parametrize("route", ["holds", "capture", "release", "refund"])
def test_replay_of_every_credit_moving_post(api, account, route):
    held = hold(api, account, {"credits": 2, "reference": "h"}).json()["id"]
    spent = debit(api, account, {"credits": 1, "reference": "d"}).json()["id"]
    path, body = {
        "holds": (f"/accounts/{account.public_id}/holds", {"credits": 1, "reference": "h2"}),
        "capture": (f"/holds/{held}/capture", {"credits": 1}),
        "release": (f"/holds/{held}/release", {}),
        "refund": (f"/debits/{spent}/refund", {}),
    }[route]
    first = api.post(path, body, idem="k-route")
    assert first.status_code in (200, 201), first.json()
    state = movements(), balance_of(account)
    second = api.post(path, body, idem="k-route")
    assert second.status_code == first.status_code
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert (movements(), balance_of(account)) == state


def test_a_402_refusal_is_replayed_even_after_credits_arrive(api, account):
    body = {"credits": 50, "reference": "r"}
    first = debit(api, account, body, idem="k-402")
    error = assert_error(first, 402, "insufficient_credits")
    give(account, 100)
    second = debit(api, account, body, idem="k-402")
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert assert_error(second, 402, "insufficient_credits") == error
    assert Debit.objects.count() == 0
    assert balance_of(account) == (110, 0)


def test_a_validation_error_is_not_stored_so_a_corrected_retry_succeeds(api, account):
    assert_error(debit(api, account, {"credits": -1, "reference": "r"}, idem="k-fix"), 400, "validation_error")
    assert IdempotencyKey.objects.count() == 0
    response = debit(api, account, {"credits": 1, "reference": "r"}, idem="k-fix")
    assert response.status_code == 201, response.json()
    assert "Idempotent-Replayed" not in response
    assert balance_of(account) == (9, 0)


def test_an_unknown_operation_is_not_stored_so_a_corrected_retry_succeeds(api, account):
    response = debit(api, account, {"operation": "no-such-operation", "reference": "r"}, idem="k-op")
    error = assert_error(response, 400, "validation_error")
    assert "operation" in error["message"]
    response = debit(api, account, {"operation": "generation", "reference": "r"}, idem="k-op")
    assert response.status_code == 201, response.json()
    assert "Idempotent-Replayed" not in response
    assert balance_of(account) == (9, 0)
    assert IdempotencyKey.objects.get(key="k-op").status_code == 201


def test_capturing_more_than_held_is_not_stored_so_a_corrected_retry_succeeds(api, account):
    held = hold(api, account, {"credits": 2, "reference": "h"}).json()["id"]
    assert_error(api.post(f"/holds/{held}/capture", {"credits": 3}, idem="k-cap"), 400, "validation_error")
    assert Hold.objects.get(public_id=held).status == Hold.Status.PENDING
    response = api.post(f"/holds/{held}/capture", {"credits": 2}, idem="k-cap")
    assert response.status_code == 200, response.json()
    assert "Idempotent-Replayed" not in response
    assert balance_of(account) == (8, 0)
    assert IdempotencyKey.objects.get(key="k-cap").status_code == 200


def test_keys_are_shared_by_every_service_key(api, account):
    """The generation service is one caller whichever key it uses (a retry after a rotation
    replays): another service key's key with another request is a conflict, not a second debit."""
    other = Api(service_key_create(name="other")[1])
    assert debit(api, account, {"credits": 1, "reference": "r"}, idem="shared").status_code == 201
    response = debit(other, account, {"credits": 2, "reference": "r"}, idem="shared")
    assert response.status_code == 409, response.json()
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert balance_of(account) == (9, 0)

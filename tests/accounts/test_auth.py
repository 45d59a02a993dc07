"""Service keys, personal tokens, who may see which account, and ledger pagination."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.ids import row_public_id, service_key_public_id, user_public_id
from accounts.models import Account, ServiceKey, User, UserToken
from accounts.services import user_token_create
from billing.models import LedgerEntry
from billing.services.ledger import Actor, debit_create, hold_capture, hold_create
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
SVC = Actor("service", "1")


def create_key(name: str = "generation") -> tuple[str, str]:
    out = StringIO()
    call_command("create_service_key", name, stdout=out)
    return out.getvalue(), out.getvalue().strip().splitlines()[-1]


def error_code(response) -> str:  # type: ignore[no-untyped-def]
    return response.json()["error"]["code"]


# --- Service keys ------------------------------------------------------------------------------


def test_create_service_key_prints_the_key_as_its_last_line_and_stores_only_its_hash():
    output, raw = create_key("generation-service")

    assert raw.startswith("sk_") and len(raw) > 40
    assert output.count(raw) == 1
    key = ServiceKey.objects.get()
    # The key is named by its public id, never its row id.
    assert f"Created service key {service_key_public_id(key.pk)} 'generation-service'" in output
    assert re.search(r"key_[0-9a-f]{16}\b", output)
    assert key.name == "generation-service"
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(key.prefix) and len(key.prefix) < len(raw) // 2
    # The raw key is nowhere in the table, in any column.
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM accounts_servicekey t")
        rows = [row[0] for row in cursor.fetchall()]
    assert len(rows) == 1
    assert raw not in rows[0]
    assert raw[10:30] not in rows[0]


def test_create_service_key_refuses_an_empty_name():
    with pytest.raises(CommandError):
        call_command("create_service_key", "   ", stdout=StringIO())
    assert not ServiceKey.objects.exists()


def test_a_created_service_key_works_as_a_bearer_key(account):
    _, raw = create_key()

    response = Api(raw).get(f"/accounts/{account.public_id}/balance")

    assert response.status_code == 200, response.json()
    assert response.json()["available"] == 10


def test_a_service_key_records_when_it_was_last_used(account):
    _, raw = create_key()
    key = ServiceKey.objects.get()
    assert key.last_used_at is None
    first_use = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)

    with time_machine.travel(first_use, tick=False):
        assert Api(raw).get(f"/accounts/{account.public_id}/balance").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at == first_use

    # Written at most once a minute: a use 30 s later leaves it, one 2 min later moves it.
    with time_machine.travel(first_use + timedelta(seconds=30), tick=False):
        assert Api(raw).get(f"/accounts/{account.public_id}/balance").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at == first_use
    with time_machine.travel(first_use + timedelta(minutes=2), tick=False):
        assert Api(raw).get(f"/accounts/{account.public_id}/balance").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at == first_use + timedelta(minutes=2)


@pytest.mark.parametrize("by", ["id", "prefix"])
def test_a_revoked_service_key_is_refused_with_401(account, by):
    _, raw = create_key()
    _, other = create_key("other")
    key = ServiceKey.objects.get(name="generation")
    assert Api(raw).get(f"/accounts/{account.public_id}/balance").status_code == 200

    out = StringIO()
    call_command("revoke_service_key", service_key_public_id(key.pk) if by == "id" else raw[:10], stdout=out)

    assert "Revoked" in out.getvalue()
    key.refresh_from_db()
    assert key.revoked_at is not None
    response = Api(raw).get(f"/accounts/{account.public_id}/balance")
    assert response.status_code == 401
    assert error_code(response) == "authentication_failed"
    refused = Api(raw).post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"})
    assert refused.status_code == 401
    # Only that key: the other one still works.
    assert Api(other).get(f"/accounts/{account.public_id}/balance").status_code == 200


def test_revoke_service_key_refuses_an_unknown_key():
    with pytest.raises(CommandError):
        call_command("revoke_service_key", "sk_nothere", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("revoke_service_key", "999999", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("revoke_service_key", service_key_public_id(999999), stdout=StringIO())


@pytest.mark.parametrize(
    "header",
    ["Bearer sk_not-a-real-key", "Bearer ", "Token abc", "Bearer a b", "Bearer ut_unknown", "bearer sk_x"],
)
def test_a_bad_authorization_header_is_401(account, header):
    response = Api().get(f"/accounts/{account.public_id}/balance", headers={"Authorization": header})

    assert response.status_code == 401
    assert error_code(response) == "authentication_failed"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_name_is_case_insensitive(account, service_key, user_api, scheme):
    balance = Api().get(f"/accounts/{account.public_id}/balance", headers={"Authorization": f"{scheme} {service_key}"})
    assert balance.status_code == 200, balance.content
    _, user = user_api
    _, token = user_token_create(user=user)
    assert Api().get("/me", headers={"Authorization": f"{scheme} {token}"}).status_code == 200


def test_no_authorization_is_401_on_service_and_user_routes(anon, account):
    for path in (f"/accounts/{account.public_id}/balance", "/me", "/me/ledger"):
        response = anon.get(path)
        assert response.status_code == 401, path
        assert error_code(response) == "authentication_failed"


# --- Personal tokens -------------------------------------------------------------------------


def test_a_token_from_auth_token_reaches_me_and_my_ledger(anon):
    signup = anon.post("/auth/signup", {"email": "Person@Example.com", "password": PASSWORD})
    assert signup.status_code == 201, signup.json()
    account_id = signup.json()["account"]

    response = anon.post("/auth/token", {"email": "person@example.com", "password": PASSWORD})

    assert response.status_code == 200, response.json()
    token = response.json()["token"]
    user = Api(token)
    me = user.get("/me")
    assert me.status_code == 200, me.json()
    assert me.json()["account"] == account_id
    assert me.json()["user"]["email"] == "person@example.com"
    assert me.json()["balance"]["available"] == 50
    ledger = user.get("/me/ledger")
    assert ledger.status_code == 200, ledger.json()
    assert [(e["kind"], e["credits"]) for e in ledger.json()["data"]] == [("grant", 50)]
    # Stored hashed, like service keys.
    stored = UserToken.objects.get()
    assert stored.key_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(UserToken.objects.values().get())


@pytest.mark.parametrize(
    "body",
    [
        {"email": "person@example.com", "password": "wrong-password-here"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
    ids=["wrong-password", "unknown-email"],
)
def test_a_wrong_password_or_unknown_email_gets_no_token(anon, body):
    assert anon.post("/auth/signup", {"email": "person@example.com", "password": PASSWORD}).status_code == 201

    response = anon.post("/auth/token", body)

    assert response.status_code == 401
    assert error_code(response) == "authentication_failed"
    assert "token" not in response.json()
    assert not UserToken.objects.exists()


def test_a_deactivated_user_token_is_refused(user_api):
    client, user = user_api
    assert client.get("/me").status_code == 200
    type(user).objects.filter(pk=user.pk).update(is_active=False)

    assert client.get("/me").status_code == 401


# --- Who sees what ----------------------------------------------------------------------------


def test_me_shows_only_the_callers_own_account(user_api, account):
    client, user = user_api
    own = Account.objects.get(user=user)
    give(account, 5)

    body = client.get("/me").json()

    assert body["account"] == own.public_id != account.public_id
    assert body["user"]["id"] == user_public_id(user.pk)
    assert body["balance"]["account"] == own.public_id
    assert body["balance"]["available"] == 50
    ledger = client.get("/me/ledger").json()["data"]
    assert {e["id"] for e in ledger} == {entry_id(e) for e in LedgerEntry.objects.filter(account=own)}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/accounts/{acct}/balance"),
        ("get", "/accounts/{acct}/ledger"),
        ("post", "/accounts/{acct}/debits"),
        ("post", "/accounts/{acct}/holds"),
    ],
)
def test_a_user_token_cannot_reach_another_account(user_api, account, method, path):
    client, _ = user_api
    url = path.format(acct=account.public_id)

    if method == "get":
        response = client.get(url)
    else:
        response = client.post(url, {"credits": 1, "reference": "steal"})

    assert response.status_code == 403, response.json()
    assert error_code(response) == "permission_denied"
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (10, 0)


def test_a_user_token_cannot_use_service_routes_even_for_its_own_account(user_api):
    client, user = user_api
    own = Account.objects.get(user=user)

    response = client.get(f"/accounts/{own.public_id}/balance")

    assert response.status_code == 403
    assert error_code(response) == "permission_denied"


def test_a_service_key_cannot_use_me_routes(api):
    for path in ("/me", "/me/ledger"):
        response = api.get(path)
        assert response.status_code == 403, path
        assert error_code(response) == "permission_denied"


@pytest.mark.parametrize("method, path", [("get", "/me"), ("get", "/me/ledger"), ("get", "/me/purchases"),
    ("get", "/me/notifications"), ("put", "/me/notifications"), ("get", "/me/auto-recharge"),
    ("delete", "/me/auto-recharge"), ("post", "/me/checkout")])  # fmt: skip
def test_a_login_without_a_credit_account_is_refused_on_me_routes(method, path):
    operator = User.objects.create_superuser(email="ops@example.com", password="x" * 12)
    _, token = user_token_create(user=operator)
    client = Api(token).client
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k-no-account"}
    response = client.generic(method.upper(), f"/api/v1{path}", "{}", content_type="application/json", headers=headers)
    assert response.status_code == 403, response.content
    assert error_code(response) == "permission_denied"
    assert "credit account" in response.json()["error"]["message"]


# --- Ledger pagination ------------------------------------------------------------------------


def entry_id(entry: LedgerEntry) -> str:
    return row_public_id("le_", entry.pk)


def busy_history(account: Account) -> None:
    """Nine more entries of mixed kinds on top of what the account already has."""
    give(account, 20)
    debit_create(account=account, credits=2, actor=SVC)
    debit_create(account=account, credits=1, actor=SVC)
    hold = hold_create(account=account, credits=3, expires_in=900, actor=SVC)
    hold_capture(hold=hold, credits=1, actor=SVC)
    give(account, 4)
    debit_create(account=account, credits=1, actor=SVC)


def walk(client: Api, path: str, limit: int) -> list[dict]:
    seen: list[dict] = []
    cursor = None
    for _ in range(100):
        params = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        response = client.get(path, **params)
        assert response.status_code == 200, response.json()
        body = response.json()
        assert len(body["data"]) <= limit
        seen.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert len(body["data"]) == limit
    raise AssertionError("pagination never ended")


def assert_walks_all_newest_first(client: Api, path: str, account: Account) -> None:
    expected = [entry_id(e) for e in LedgerEntry.objects.filter(account=account).order_by("-id")]
    assert len(expected) >= 5

    entries = walk(client, path, limit=2)

    ids = [e["id"] for e in entries]
    assert ids == expected  # every entry once, newest first, nothing from other accounts
    assert len(set(ids)) == len(ids)
    assert walk(client, path, limit=200) == entries


def test_me_ledger_pages_through_every_entry_newest_first(user_api, account):
    client, user = user_api
    own = Account.objects.get(user=user)
    busy_history(own)
    busy_history(account)  # another account's entries interleave by id and must not show

    assert_walks_all_newest_first(client, "/me/ledger", own)


def test_service_ledger_pages_through_every_entry_newest_first(api, account):
    busy_history(account)
    busy_history(make_account())

    assert_walks_all_newest_first(api, f"/accounts/{account.public_id}/ledger", account)


def test_entries_written_while_paging_do_not_repeat_or_shift_older_pages(api, account):
    busy_history(account)
    path = f"/accounts/{account.public_id}/ledger"
    before = [entry_id(e) for e in LedgerEntry.objects.filter(account=account).order_by("-id")]

    first = api.get(path, limit=3).json()
    debit_create(account=account, credits=1, actor=SVC)  # newer than everything already listed
    rest = []
    cursor = first["next_cursor"]
    while cursor:
        page = api.get(path, limit=3, cursor=cursor).json()
        rest.extend(page["data"])
        cursor = page["next_cursor"]

    assert [e["id"] for e in first["data"] + rest] == before


def test_a_ledger_entry_has_the_documented_shape(api, account):
    body = api.get(f"/accounts/{account.public_id}/ledger", limit=1).json()

    entry = body["data"][0]
    documented = {"id", "kind", "credits", "balance_after", "held_after", "grant", "actor", "reference", "created_at"}
    assert set(entry) >= documented
    assert (entry["kind"], entry["credits"], entry["balance_after"], entry["held_after"]) == ("grant", 10, 10, 0)
    assert body["next_cursor"] is None


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Today's cursors are opaque (cur_ and 11 characters); the base64 ones of old, others' ids and
# bodies past the id range are refused alike.
BAD_CURSORS = [
    "not-a-cursor!",
    "%%%",
    _cursor("e12"),
    _cursor("e"),
    _cursor("12"),
    "",
    "A" * 65,
    "cur_ffffffffffffffff",  # past the id range
    "cur_0000000000000000x",
    "cur_AAAAAAAAAA",
    "le_AAAAAAAAAAA",
    "cur_AAAAAAAAAA!",
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_bad_cursor_on_me_ledger_is_a_validation_error(user_api, cursor):
    client, _ = user_api

    response = client.get("/me/ledger", cursor=cursor)

    assert response.status_code == 400, response.json()
    assert error_code(response) == "validation_error"


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_bad_cursor_on_the_service_ledger_is_a_validation_error(api, account, cursor):
    response = api.get(f"/accounts/{account.public_id}/ledger", cursor=cursor)

    assert response.status_code == 400, response.json()
    assert error_code(response) == "validation_error"


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "1.5"])
def test_a_bad_limit_is_a_validation_error(api, account, limit):
    response = api.get(f"/accounts/{account.public_id}/ledger", limit=limit)

    assert response.status_code == 400, response.json()
    assert error_code(response) == "validation_error"


def test_a_cursor_beyond_the_id_range_is_a_validation_error(api, account):
    response = api.get(f"/accounts/{account.public_id}/ledger", cursor="cur_" + "f" * 16)

    assert response.status_code == 400, response.content
    assert error_code(response) == "validation_error"


def test_the_ledger_of_an_unknown_account_is_404(api):
    response = api.get("/accounts/acct_unknown/ledger")

    assert response.status_code == 404
    assert error_code(response) == "not_found"

"""Malformed bodies and headers on every write endpoint.

Contract (DESIGN.md, Errors): never a 500 for bad input, never a stack trace, always the
documented error shape; and bad input changes nothing: no credits move, no debit, hold,
ledger entry, idempotency key, user or token is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from accounts.models import Account, User, UserToken
from billing.models import Debit, Grant, Hold, IdempotencyKey, LedgerEntry
from billing.services.ledger import Actor, debit_create, hold_create
from tests.accounts.factories import UserFactory
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db

SERVICE_ROUTES = ["debits", "holds", "capture", "release", "refund"]
AUTH_ROUTES = ["signup", "token"]
ALL_ROUTES = SERVICE_ROUTES + AUTH_ROUTES
SPEND_ROUTES = ["debits", "holds"]
EXISTING_EMAIL = "existing@example.com"
EXISTING_PASSWORD = "correct-horse-battery"
DROP = object()  # in a field change: leave the field out
BAD = (400, "validation_error")


@dataclass
class World:
    """An account with credits, one pending hold, one debit, one user, and what they look like."""

    client: Client
    service_key: str
    account: Account
    hold_id: str
    debit_id: str

    def path(self, route: str) -> str:
        return {
            "debits": f"/api/v1/accounts/{self.account.public_id}/debits",
            "holds": f"/api/v1/accounts/{self.account.public_id}/holds",
            "capture": f"/api/v1/holds/{self.hold_id}/capture",
            "release": f"/api/v1/holds/{self.hold_id}/release",
            "refund": f"/api/v1/debits/{self.debit_id}/refund",
            "signup": "/api/v1/auth/signup",
            "token": "/api/v1/auth/token",
        }[route]

    def post(
        self,
        route: str,
        data: bytes | str,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ):  # type: ignore[no-untyped-def]
        sent = {"Authorization": f"Bearer {self.service_key}", "Idempotency-Key": "bad-input-key"}
        sent.update(headers or {})
        sent = {name: value for name, value in sent.items() if value is not None}
        # generic() sends the bytes as given; post() would re-encode them in the declared charset.
        return self.client.generic("POST", path or self.path(route), data, content_type=content_type, headers=sent)


VALID_BODY: dict[str, dict[str, Any]] = {
    "debits": {"credits": 1, "reference": "r-1"},
    "holds": {"credits": 1, "reference": "h-1"},
    "capture": {"credits": 1},
    "release": {},
    "refund": {},
    "signup": {"email": "newcomer@example.com", "password": "another-horse-battery"},
    "token": {"email": EXISTING_EMAIL, "password": EXISTING_PASSWORD},
}


@pytest.fixture
def world(service_key) -> World:
    UserFactory(email=EXISTING_EMAIL, password=EXISTING_PASSWORD)
    account = make_account()
    give(account, 10)
    actor = Actor("service", "fixture")
    held = hold_create(account=account, credits=2, expires_in=900, actor=actor, reference="h")
    spent = debit_create(account=account, credits=1, actor=actor, reference="d")
    return World(Client(), service_key, account, held.public_id, spent.public_id)


def state() -> dict[str, Any]:
    """Everything a write endpoint could change."""
    return {
        "counts": {
            model.__name__: model.objects.count()
            for model in (Debit, Hold, LedgerEntry, IdempotencyKey, Grant, User, Account, UserToken)
        },
        "balances": sorted(Account.objects.values_list("id", "available_credits", "held_credits")),
        "grants": sorted(Grant.objects.values_list("id", "remaining")),
        "holds": sorted(Hold.objects.values_list("id", "status", "captured_credits", "settled_at")),
        "debits": sorted(Debit.objects.values_list("id", "refunded_at")),
    }


def assert_refused(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    text = response.content.decode("utf-8", errors="replace")
    assert response.status_code != 500, text[:500]
    assert 400 <= response.status_code < 500, (response.status_code, text[:500])
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    assert response["Content-Type"].startswith("application/json"), (response["Content-Type"], text[:300])
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip(), body
    assert (response.status_code, body["error"]["code"]) == (status, code), body


def check(world: World, route: str, data: bytes | str, status: int, code: str, **kwargs: Any) -> None:
    before = state()
    response = world.post(route, data, **kwargs)
    assert_refused(response, status, code)
    assert state() == before


def with_fields(route: str, **changes: Any) -> str:
    body = dict(VALID_BODY[route])
    for name, value in changes.items():
        if value is DROP:
            body.pop(name, None)
        else:
            body[name] = value
    return json.dumps(body)


def test_the_valid_bodies_are_accepted(world):
    """The baseline: each valid body works, so the refusals below are caused by the bad part."""
    expected = {"debits": 201, "holds": 201, "capture": 200, "release": 200, "refund": 200, "signup": 201, "token": 200}
    for n, route in enumerate(["debits", "holds", "capture", "refund", "signup", "token"]):
        response = world.post(route, json.dumps(VALID_BODY[route]), headers={"Idempotency-Key": f"ok-{n}"})
        assert response.status_code == expected[route], (route, response.content)
    other = hold_create(account=world.account, credits=1, expires_in=60, actor=Actor("service", "x"))
    response = world.post(
        "release", "{}", path=f"/api/v1/holds/{other.public_id}/release", headers={"Idempotency-Key": "ok-release"}
    )
    assert response.status_code == 200, response.content


# --- Bodies that are not a JSON object, on every route ---------------------------------------

RAW_BODIES = {
    "invalid-json-bare-words": b"{credits: 1, reference: r}",
    "invalid-json-single-quotes": b"{'credits': 1}",
    "invalid-json-trailing-comma": b'{"credits": 1,}',
    "invalid-json-text": b"hello",
    "invalid-json-two-documents": b"{} {}",
    "truncated-object": b'{"credits": 1, "refer',
    "truncated-brace": b"{",
    "truncated-string": b'{"email": "a@',
    "bad-utf8-in-string": b'{"reference": "\xff\xfe"}',
    "bad-utf8-bare": b"\xc3\x28",
    "utf16-bytes": '{"credits": 1}'.encode("utf-16"),
    "json-array": b"[]",
    "json-array-of-object": b'[{"credits": 1, "reference": "r"}]',
    "json-string": b'"credits"',
    "json-number": b"1",
    "json-null": b"null",
    "json-true": b"true",
    "nan": b'{"credits": NaN, "reference": "r", "email": NaN, "password": NaN}',
    "infinity": b'{"credits": Infinity, "reference": "r", "email": "a@b.co", "password": Infinity}',
    "minus-infinity": b'{"credits": -Infinity, "reference": "r"}',
    "integer-beyond-str-limit": b'{"credits": 1' + b"0" * 5000 + b', "reference": "r"}',
    "deeply-nested-arrays": b"[" * 30000 + b"]" * 30000,
    "deeply-nested-objects": b'{"a":' * 10000 + b"1" + b"}" * 10000,
}


@pytest.mark.parametrize("route", ALL_ROUTES)
@pytest.mark.parametrize("name", list(RAW_BODIES))
def test_a_body_that_is_not_a_json_object_is_refused(world, route, name):
    check(world, route, RAW_BODIES[name], *BAD)


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_unknown_fields_are_refused(world, route):
    before = state()
    response = world.post(route, with_fields(route, unexpected="x"))
    assert_refused(response, *BAD)
    assert "unexpected" in response.json()["error"]["fields"]
    assert state() == before


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_an_oversized_body_is_413(world, route):
    padding = "x" * (65 * 1024)
    check(world, route, with_fields(route, padding=padding), 413, "request_too_large")


@pytest.mark.parametrize("route", ALL_ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/xml",
        "application/octet-stream",
    ],
)
def test_a_wrong_content_type_is_415(world, route, content_type):
    check(world, route, json.dumps(VALID_BODY[route]), 415, "unsupported_media_type", content_type=content_type)


@pytest.mark.parametrize("route", ALL_ROUTES)
@pytest.mark.parametrize("charset", ["utf-16", "utf-32"])
def test_a_body_that_does_not_match_its_declared_charset_is_refused(world, route, charset):
    # UTF-8 bytes read as UTF-16/32 are not JSON. (An unknown charset name is ignored by Django,
    # which then reads UTF-8, so that case is not bad input.)
    body = json.dumps(VALID_BODY[route]) + " "  # odd lengths as well as even ones
    check(world, route, body, *BAD, content_type=f"application/json; charset={charset}")


# --- Spend requests (debits, holds) -----------------------------------------------------------

SPEND_CASES = {
    "credits-string": {"credits": "1"},
    "credits-float": {"credits": 1.5},
    "credits-integral-float": {"credits": 1.0},
    "credits-true": {"credits": True},
    "credits-false": {"credits": False},
    "credits-object": {"credits": {"value": 1}},
    "credits-list": {"credits": [1]},
    "credits-null": {"credits": None},
    "credits-negative": {"credits": -1},
    "credits-zero": {"credits": 0},
    "credits-over-the-request-cap": {"credits": 1_000_001},
    "credits-huge": {"credits": 10**30},
    "credits-huge-negative": {"credits": -(10**30)},
    "both-operation-and-credits": {"operation": "generation"},
    "neither-operation-nor-credits": {"credits": DROP},
    "unknown-operation": {"credits": DROP, "operation": "no-such-operation"},
    "operation-empty": {"credits": DROP, "operation": ""},
    "operation-not-a-slug": {"credits": DROP, "operation": "gen eration"},
    "operation-too-long": {"credits": DROP, "operation": "g" * 51},
    "operation-list": {"credits": DROP, "operation": ["generation"]},
    "operation-null": {"credits": DROP, "operation": None},
    "reference-missing": {"reference": DROP},
    "reference-empty": {"reference": ""},
    "reference-too-long": {"reference": "r" * 256},
    "reference-true": {"reference": True},
    "reference-object": {"reference": {"id": "r"}},
    "reference-null": {"reference": None},
    "reference-nul-character": {"reference": "r\u0000"},
    "reference-lone-surrogate": {"reference": "r\ud800"},
}
DEBIT_ONLY_CASES = {
    "metadata-list": {"metadata": ["a"]},
    "metadata-string": {"metadata": "a"},
    "metadata-number": {"metadata": 1},
    "metadata-too-big": {"metadata": {"blob": "m" * 5000}},
    "metadata-nul-in-value": {"metadata": {"note": "a\u0000b"}},
    "metadata-nul-in-key": {"metadata": {"a\u0000b": "note"}},
    "metadata-lone-surrogate": {"metadata": {"note": "\udc00"}},
}
HOLD_ONLY_CASES = {
    "expires-in-zero": {"expires_in": 0},
    "expires-in-negative": {"expires_in": -1},
    "expires-in-over-a-day": {"expires_in": 86401},
    "expires-in-huge": {"expires_in": 10**30},
    "expires-in-string": {"expires_in": "60"},
    "expires-in-float": {"expires_in": 60.5},
    "expires-in-true": {"expires_in": True},
    "expires-in-null": {"expires_in": None},
    "expires-in-object": {"expires_in": {"seconds": 60}},
}


@pytest.mark.parametrize("route", SPEND_ROUTES)
@pytest.mark.parametrize("name", list(SPEND_CASES))
def test_a_bad_spend_request_is_refused(world, route, name):
    check(world, route, with_fields(route, **SPEND_CASES[name]), *BAD)


@pytest.mark.parametrize("name", list(DEBIT_ONLY_CASES))
def test_bad_debit_metadata_is_refused(world, name):
    check(world, "debits", with_fields("debits", **DEBIT_ONLY_CASES[name]), *BAD)


@pytest.mark.parametrize("name", list(HOLD_ONLY_CASES))
def test_a_bad_hold_expiry_is_refused(world, name):
    check(world, "holds", with_fields("holds", **HOLD_ONLY_CASES[name]), *BAD)


@pytest.mark.parametrize("route", SPEND_ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        b'{"credits": 1, "reference": "r", "metadata": {"x": 1e400}}',
        b'{"credits": 1e400, "reference": "r"}',
    ],
    ids=["float-overflow-in-metadata", "float-overflow-credits"],
)
def test_a_float_overflowing_to_infinity_is_refused(world, route, raw):
    if route == "holds" and b"metadata" in raw:
        raw = raw.replace(b"metadata", b"expires_in").replace(b'{"x": 1e400}', b"1e400")
    check(world, route, raw, *BAD)


STRING_FIELD_CASES = {
    "debits-reference-number": ("debits", {"reference": 12345}),
    "debits-reference-float": ("debits", {"reference": 1.5}),
    "debits-reference-float-overflow": ("debits", {"reference": float("inf")}),
    "holds-reference-number": ("holds", {"reference": 12345}),
    "debits-operation-number": ("debits", {"credits": DROP, "operation": 7}),
    "holds-operation-number": ("holds", {"credits": DROP, "operation": 7}),
    "signup-password-number": ("signup", {"password": 1234567890}),
}


@pytest.mark.parametrize("name", list(STRING_FIELD_CASES))
def test_a_string_field_refuses_a_json_number(world, name):
    """A number where the contract names a string is a client bug; say so, as the integer fields do.

    DRF's CharField would quietly turn 12345 into "12345" (and 1e400 into "inf"); the API's
    strict serializers exist so that a malformed request is an error, not a silent guess.
    """
    route, changes = STRING_FIELD_CASES[name]
    body = with_fields(route, **changes).replace("Infinity", "1e400")
    check(world, route, body, *BAD)


# --- Capture, release, refund -------------------------------------------------------------------

CAPTURE_CASES = {
    "credits-negative": {"credits": -1},
    "credits-string": {"credits": "1"},
    "credits-float": {"credits": 1.5},
    "credits-true": {"credits": True},
    "credits-null": {"credits": None},
    "credits-object": {"credits": {"n": 1}},
    "credits-huge": {"credits": 10**30},
    "credits-more-than-held": {"credits": 3},
    "credits-over-the-request-cap": {"credits": 1_000_001},
}


@pytest.mark.parametrize("name", list(CAPTURE_CASES))
def test_a_bad_capture_is_refused(world, name):
    check(world, "capture", with_fields("capture", **CAPTURE_CASES[name]), *BAD)


@pytest.mark.parametrize("route", ["release", "refund"])
@pytest.mark.parametrize("body", [{"credits": 1}, {"reason": "x"}, {"": None}], ids=["credits", "reason", "empty-name"])
def test_release_and_refund_take_no_fields(world, route, body):
    check(world, route, json.dumps(body), *BAD)


# --- Sign-up and token ---------------------------------------------------------------------------

SIGNUP_CASES = {
    "email-missing": {"email": DROP},
    "email-empty": {"email": ""},
    "email-invalid": {"email": "not-an-email"},
    "email-number": {"email": 12345},
    "email-true": {"email": True},
    "email-object": {"email": {"address": "a@b.co"}},
    "email-list": {"email": ["a@b.co"]},
    "email-null": {"email": None},
    "email-too-long": {"email": "a" * 250 + "@example.com"},
    "email-nul-character": {"email": "new\u0000comer@example.com"},
    "email-lone-surrogate": {"email": "new\ud800@example.com"},
    "email-already-taken": {"email": EXISTING_EMAIL},
    "email-already-taken-other-case": {"email": EXISTING_EMAIL.upper()},
    "password-missing": {"password": DROP},
    "password-short": {"password": "short"},
    "password-too-long": {"password": "p" * 129},
    "password-true": {"password": True},
    "password-list": {"password": ["another-horse-battery"]},
    "password-null": {"password": None},
    "password-nul-character": {"password": "another\u0000horse"},
}
TOKEN_CASES = {
    "email-missing": ({"email": DROP}, BAD),
    "email-invalid": ({"email": "not-an-email"}, BAD),
    "email-number": ({"email": 12345}, BAD),
    "email-null": ({"email": None}, BAD),
    "email-too-long": ({"email": "a" * 250 + "@example.com"}, BAD),
    "email-nul-character": ({"email": "exist\u0000ing@example.com"}, BAD),
    "password-missing": ({"password": DROP}, BAD),
    "password-too-long": ({"password": "p" * 129}, BAD),
    "password-object": ({"password": {"p": 1}}, BAD),
    "password-null": ({"password": None}, BAD),
    "password-nul-character": ({"password": "correct\u0000horse"}, BAD),
    "password-wrong": ({"password": "not-the-password"}, (401, "authentication_failed")),
    "email-unknown": ({"email": "nobody@example.com"}, (401, "authentication_failed")),
}


@pytest.mark.parametrize("name", list(SIGNUP_CASES))
def test_a_bad_signup_is_refused(world, name):
    check(world, "signup", with_fields("signup", **SIGNUP_CASES[name]), *BAD)


@pytest.mark.parametrize("name", list(TOKEN_CASES))
def test_a_bad_token_request_is_refused(world, name):
    changes, expected = TOKEN_CASES[name]
    check(world, "token", with_fields("token", **changes), *expected)


# --- Headers ---------------------------------------------------------------------------------------

IDEMPOTENCY_KEY_CASES = {
    "missing": (None, (400, "idempotency_key_required")),
    "empty": ("", (400, "idempotency_key_required")),
    "blank": ("   ", (400, "idempotency_key_required")),
    "too-long": ("k" * 256, BAD),
    "huge": ("k" * 20000, BAD),
    # A WSGI server hands header bytes over decoded as latin-1, so UTF-8 arrives like this.
    "non-ascii": ("ключ-идемпотентности".encode().decode("latin-1"), BAD),
    "non-ascii-unicode": ("ключ", BAD),
    "latin-1": ("cl\u00e9", BAD),
    "control-character": ("key\x01x", BAD),
    "tab": ("key\tx", BAD),
}


@pytest.mark.parametrize("route", SERVICE_ROUTES)
@pytest.mark.parametrize("name", list(IDEMPOTENCY_KEY_CASES))
def test_a_bad_idempotency_key_is_refused(world, route, name):
    key, expected = IDEMPOTENCY_KEY_CASES[name]
    check(world, route, json.dumps(VALID_BODY[route]), *expected, headers={"Idempotency-Key": key})


AUTHORIZATION_CASES = {
    "missing": None,
    "empty": "",
    "scheme-only": "Bearer",
    "scheme-and-space": "Bearer ",
    "lowercase-scheme-unknown-key": "bearer sk_unknown",
    "basic": "Basic dXNlcjpwYXNzd29yZA==",
    "token-scheme": "Token sk_unknown",
    "three-parts": "Bearer sk_a sk_b",
    "no-scheme": "sk_unknown",
    "unknown-service-key": "Bearer sk_" + "u" * 43,
    "unknown-user-token": "Bearer ut_" + "u" * 43,
    "no-prefix": "Bearer " + "u" * 43,
    "huge": "Bearer sk_" + "h" * 20000,
    "non-ascii": "Bearer sk_ключ".encode().decode("latin-1"),
    "non-ascii-unicode": "Bearer sk_ключ",
    "latin-1": "Bearer sk_cl\u00e9",
    "control-character": "Bearer sk_\x01\x02",
    "nul-character": "Bearer sk_\x00abc",
}


@pytest.mark.parametrize("route", SERVICE_ROUTES)
@pytest.mark.parametrize("name", list(AUTHORIZATION_CASES))
def test_a_garbage_authorization_header_is_401(world, route, name):
    headers = {"Authorization": AUTHORIZATION_CASES[name]}
    check(world, route, json.dumps(VALID_BODY[route]), 401, "authentication_failed", headers=headers)


@pytest.mark.parametrize("name", ["basic", "huge", "non-ascii", "nul-character"])
def test_a_garbage_authorization_header_does_not_break_the_public_routes(world, name):
    """Sign-up and token take no credentials; a bad header must still not reach a 500."""
    headers = {"Authorization": AUTHORIZATION_CASES[name]}
    check(
        world, "token", with_fields("token", password="wrong-password"), 401, "authentication_failed", headers=headers
    )
    check(world, "signup", with_fields("signup", email="not-an-email"), *BAD, headers=headers)


# --- Ids in the path ---------------------------------------------------------------------------------

BAD_IDS = {
    "unknown": "nope",
    "nul-character": "%00",
    "nul-inside": "hold_%00abc",
    "non-ascii": "%D0%BA%D0%BB%D1%8E%D1%87",
    "bad-percent-utf8": "%FF%FE",
    "very-long": "x" * 5000,
    "sql-ish": "1%27%20OR%20%271%27%3D%271",
}


@pytest.mark.parametrize("route", SERVICE_ROUTES)
@pytest.mark.parametrize("name", list(BAD_IDS))
def test_a_malformed_id_in_the_path_is_404(world, route, name):
    bad = BAD_IDS[name]
    path = world.path(route)
    for real in (world.account.public_id, world.hold_id, world.debit_id):
        path = path.replace(real, bad)
    before = state()
    response = world.post(route, json.dumps(VALID_BODY[route]), path=path)
    assert_refused(response, 404, "not_found")
    assert state() == before


@pytest.mark.parametrize("name", ["nul-character", "nul-inside", "non-ascii", "very-long"])
def test_a_malformed_id_on_a_read_route_is_404(world, name):
    bad = BAD_IDS[name]
    headers = {"Authorization": f"Bearer {world.service_key}"}
    for path in (f"/api/v1/accounts/{bad}/balance", f"/api/v1/accounts/{bad}/ledger", f"/api/v1/holds/{bad}"):
        assert_refused(world.client.get(path, headers=headers), 404, "not_found")

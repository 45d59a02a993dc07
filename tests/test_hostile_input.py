"""Hostile request bodies get a clear 4xx in the documented shape, in our words: duplicate JSON
keys, keys that are not text, numbers too long for Python, text that is not UTF-8, chunked bodies (config/parsers.py,
config/errors.py)."""

from __future__ import annotations

import pytest

from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db


@pytest.fixture
def debits(api):  # type: ignore[no-untyped-def]
    account = make_account()
    give(account, 10)
    return api, f"/accounts/{account.public_id}/debits", account


def assert_refused(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    return error


def test_a_key_named_twice_in_one_object_is_a_400_and_charges_nothing(debits):
    api, path, account = debits
    response = api.post(path, raw='{"reference": "r", "credits": 1, "credits": 2}')

    error = assert_refused(response, 400, "validation_error")
    assert "'credits' appears twice" in error["message"]
    account.refresh_from_db()
    assert account.available_credits == 10


def test_a_key_named_twice_in_a_nested_object_is_refused_too(debits):
    api, path, _ = debits
    body = '{"reference": "r", "credits": 1, "metadata": {"a": 1, "a": 2}}'
    assert_refused(api.post(path, raw=body), 400, "validation_error")


@pytest.mark.parametrize(
    "raw",
    [
        '{"reference": "r", "credits": ' + "9" * 5000 + "}",  # past Python's int conversion limit
        '{"reference": "r", "credits": NaN}',
        '{"reference": "r", "credits": -Infinity}',
    ],
)
def test_numbers_python_cannot_or_should_not_read_get_our_message_not_pythons(debits, raw):
    api, path, _ = debits
    error = assert_refused(api.post(path, raw=raw), 400, "validation_error")
    assert "too long or not finite" in error["message"]
    assert "sys." not in error["message"] and "set_int_max_str_digits" not in str(error)


def test_a_body_that_is_not_utf8_gets_our_message_not_a_codec_error(debits):
    api, path, _ = debits
    response = api.client.post(
        f"/api/v1{path}",
        b'{"reference": "\xff\xfe", "credits": 1}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {api.key}", "Idempotency-Key": "k-utf8"},
    )
    error = assert_refused(response, 400, "validation_error")
    assert "not utf-8 text" in error["message"] and "codec" not in error["message"]


def test_malformed_json_says_where_in_our_shape(debits):
    api, path, _ = debits
    error = assert_refused(api.post(path, raw='{"reference": "r",, }'), 400, "validation_error")
    assert "line 1 column" in error["message"]


def test_a_chunked_body_is_refused_with_411_not_read_as_empty(debits):
    api, path, account = debits
    response = api.post(path, {"reference": "r", "credits": 1}, headers={"Transfer-Encoding": "chunked"})

    assert_refused(response, 411, "length_required")
    account.refresh_from_db()
    assert account.available_credits == 10


def test_a_well_formed_body_still_debits(debits):
    api, path, account = debits
    assert api.post(path, {"reference": "r", "credits": 2, "metadata": {"a": {"b": [1, 2]}}}).status_code == 201
    account.refresh_from_db()
    assert account.available_credits == 8


def test_an_anonymous_route_refuses_duplicate_keys_too():
    response = Api().post("/auth/token", raw='{"email": "a@example.com", "email": "b@example.com", "password": "x"}')
    assert_refused(response, 400, "validation_error")


@pytest.mark.parametrize("key", ["\\ud800", "x\\udc00", "\\udbff"])
def test_a_lone_surrogate_in_a_key_is_a_400_not_a_failure_to_quote_it_back(debits, user_api, key):
    api, path, account = debits
    raw = '{"reference": "r", "credits": 1, "' + key + '": 1}'
    error = assert_refused(api.post(path, raw=raw), 400, "validation_error")
    assert "lone surrogate" in error["message"]
    account.refresh_from_db()
    assert account.available_credits == 10
    user, _ = user_api
    nested = '{"emails": {"' + key + '": true}}'
    headers = user._headers(None, None)
    response = user.client.put("/api/v1/me/notifications", nested, content_type="application/json", headers=headers)
    assert_refused(response, 400, "validation_error")
    assert_refused(Api().post("/waitlist", raw='{"' + key + '": "a@example.com"}'), 400, "validation_error")


def test_a_key_in_other_scripts_is_quoted_back_as_an_unknown_field(debits):
    api, path, _ = debits
    error = assert_refused(
        api.post(path, raw='{"reference": "r", "credits": 1, "crédits": 2}'), 400, "validation_error"
    )
    assert "crédits" in str(error)

"""Every 400 validation_error says which fields are wrong in one shape, `fields: {name:
[messages]}`, whether DRF's serializer, the money engine (an unknown operation, a capture of more
than is held) or the purchase service (an unknown pack) refused the request."""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import Operation
from billing.services.ledger import Actor, hold_create
from tests.billing.factories import give

pytestmark = pytest.mark.django_db


def assert_fields(response: Any, expected: dict[str, Any] | None = None) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = error["fields"]
    assert isinstance(fields, dict) and fields, error
    for name, messages in fields.items():
        assert isinstance(name, str)
        assert isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages), error
    if expected is not None:
        assert fields == expected
    return fields


def test_an_unknown_operation_names_the_operation_field(api, account):
    for route in (f"/accounts/{account.public_id}/debits", f"/accounts/{account.public_id}/holds"):
        response = api.post(route, {"operation": "teleport", "reference": "r"})
        assert_fields(response, {"operation": ["Unknown or inactive operation 'teleport'."]})


def test_an_inactive_operation_is_unknown_too(api, account):
    Operation.objects.filter(code="edit").update(active=False)
    response = api.post(f"/accounts/{account.public_id}/debits", {"operation": "edit", "reference": "r"})
    assert_fields(response, {"operation": ["Unknown or inactive operation 'edit'."]})


def test_an_unknown_operation_in_a_batch_item_names_the_field(api, account):
    item = {"account_id": account.public_id, "idempotency_key": "k1", "operation": "teleport", "reference": "r"}
    response = api.post("/debits/batch", {"debits": [item]}, idem=None)
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert result["status"] == 400
    assert result["body"]["error"]["fields"] == {"operation": ["Unknown or inactive operation 'teleport'."]}


def test_an_unknown_pack_names_the_pack_field(user_api, stripe_keys):
    client, _ = user_api
    response = client.post("/me/checkout", {"pack": "credits-999"}, idem=None)
    assert_fields(response, {"pack": ["Unknown or inactive pack 'credits-999'."]})


def test_a_capture_of_more_than_is_held_names_the_credits_field(api, account):
    give(account, 5)
    hold = hold_create(account=account, credits=2, expires_in=900, actor=Actor("service", "1"))
    response = api.post(f"/holds/{hold.public_id}/capture", {"credits": 3})
    assert_fields(response, {"credits": ["credits must be an integer from 0 to 2"]})
    assert response.json()["error"]["held"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reference": "r"}, "non_field_errors"),  # neither operation nor credits
        ({"credits": 0, "reference": "r"}, "credits"),
        ({"credits": 1}, "reference"),
        ({"credits": 1, "reference": "r", "colour": "red"}, "colour"),
    ],
)
def test_serializer_refusals_have_the_same_shape(api, account, body, field):
    fields = assert_fields(api.post(f"/accounts/{account.public_id}/debits", body))
    assert field in fields


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b"null"])
def test_a_body_that_is_not_a_json_object_has_the_same_shape(api, account, raw):
    assert_fields(api.post(f"/accounts/{account.public_id}/debits", raw=raw))


def test_a_bad_query_parameter_has_the_same_shape(api, account):
    fields = assert_fields(api.get(f"/accounts/{account.public_id}/ledger", cursor="nope"))
    assert fields == {"cursor": ["Invalid cursor: pass next_cursor from the previous page."]}


def test_a_signup_refusal_has_the_same_shape(anon):
    fields = assert_fields(anon.post("/auth/signup", {"email": "not-an-email", "password": "x"}, idem=None))
    assert "email" in fields

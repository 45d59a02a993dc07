"""The published API description states the rules the server enforces (the Idempotency-Key's
length and characters, a ledger page's limit and cursor, unknown fields refused, a spend's
operation xor credits, free text, the email switches, nested validation errors): each rule is
read from the code that enforces it and held to the same answers on sample input."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from rest_framework import serializers

from accounts.serializers import StrictCharField
from billing.idempotency import MAX_KEY_LENGTH, valid_key
from billing.schema import NON_BLANK_TEXT_PATTERN, TEXT_PATTERN
from billing.serializers import LedgerQuery, SpendRequest, decode_cursor, encode_cursor
from notifications.services.preferences import EMAIL_KINDS
from tests.test_openapi import CREDIT_MOVING, assert_documented, published_schema, resolve

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema() -> dict[str, Any]:
    return published_schema()


def request_components(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every request body's component, by name (a serializer's class name)."""
    names = set()
    for operations in schema["paths"].values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                names.add(body["$ref"].rsplit("/", 1)[-1])
    return {name: resolve(schema, schema["components"]["schemas"][name]) for name in names}


def serializer_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    todo = [serializers.Serializer]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith(("accounts.", "billing.", "console.", "notifications.", "waitlist.")):
            found[cls.__name__] = cls
    return found


def key_samples() -> list[str]:
    """Each character of Latin-1 alone and among printable ones, blanks, and lengths about the limit."""
    samples = ["", " ", "   ", "a b", "a" * MAX_KEY_LENGTH, "a" * (MAX_KEY_LENGTH + 1), " " * MAX_KEY_LENGTH]
    for code in range(0x180):
        samples += [chr(code), f"a{chr(code)}b", f"{chr(code)} "]
    return samples


def test_the_idempotency_key_header_states_what_the_server_accepts(schema):
    headers = [
        parameter["schema"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "Idempotency-Key"
    ]
    assert len(headers) == len(CREDIT_MOVING) + 2  # and the two account status routes
    for header in headers:
        assert header == headers[0]
    header = headers[0]
    assert header["maxLength"] == MAX_KEY_LENGTH
    for key in key_samples():
        in_schema = header["minLength"] <= len(key) <= header["maxLength"] and re.search(header["pattern"], key)
        assert bool(in_schema) == valid_key(key), repr(key)


@pytest.mark.parametrize("path", ["/api/v1/accounts/{account_id}/ledger", "/api/v1/me/ledger"])
def test_the_ledger_query_states_the_limit_and_cursor_it_accepts(schema, path):
    parameters = {p["name"]: p["schema"] for p in schema["paths"][path]["get"]["parameters"] if p["in"] == "query"}
    limit = LedgerQuery().fields["limit"]
    assert parameters["limit"] == {
        "type": "integer",
        "minimum": limit.min_value,
        "maximum": limit.max_value,
        "default": limit.default,
    }
    pattern = parameters["cursor"]["pattern"]
    for entry_id in (1, 2, 10**9, 2**62 - 1):
        assert re.search(pattern, encode_cursor(entry_id))
    for cursor in ["cur_", "cur_0", "x", "cur_4000000000000000", "cur_3fffffffffffffff", "cur_0000000000000000"]:
        assert bool(re.search(pattern, cursor)) == (decode_cursor(cursor) is not None), cursor


def test_the_ledger_limit_refuses_what_the_schema_refuses(schema, user_api):
    users, _ = user_api
    limit = schema["paths"]["/api/v1/me/ledger"]["get"]["parameters"][1]["schema"]
    assert users.get("/me/ledger", limit=limit["maximum"]).status_code == 200
    assert users.get("/me/ledger", limit=limit["minimum"]).status_code == 200
    assert users.get("/me/ledger", limit=limit["maximum"] + 1).status_code == 400
    assert users.get("/me/ledger", limit=limit["minimum"] - 1).status_code == 400


def test_request_bodies_refuse_unknown_fields_as_the_schema_says(schema):
    classes = serializer_classes()
    components = request_components(schema)
    assert {"DebitRequest", "StatusChangeRequest", "NotificationsRequest", "WaitlistJoinRequest"} <= set(components)
    for name, component in components.items():
        serializer = classes[name](data={"x-unknown": 1})
        refused = not serializer.is_valid() and "x-unknown" in serializer.errors
        assert refused == (component.get("additionalProperties") is False), name


@pytest.mark.parametrize("name", ["DebitRequest", "HoldRequest"])
def test_a_spend_names_operation_or_credits_exactly_as_the_schema_says(schema, name):
    component = request_components(schema)[name]
    assert component["oneOf"] == [{"required": [field]} for field in SpendRequest.exactly_one_of]
    for body in ({}, {"operation": "generation"}, {"credits": 2}, {"operation": "generation", "credits": 2}):
        body = {**body, "reference": "job-1"}
        in_schema = OAS30Validator(component).is_valid(body)
        assert in_schema == serializer_classes()[name](data=body).is_valid(), body


def test_free_text_fields_state_the_text_the_server_refuses(schema):
    components = request_components(schema)
    assert components["DebitRequest"]["properties"]["reference"]["pattern"] == NON_BLANK_TEXT_PATTERN
    assert components["TokenRequest"]["properties"]["password"]["pattern"] == TEXT_PATTERN  # not trimmed
    trimmed, kept = StrictCharField(), StrictCharField(trim_whitespace=False)
    for code in range(0x3100):  # past every character str.isspace() holds true
        for field, pattern in ((trimmed, NON_BLANK_TEXT_PATTERN), (kept, TEXT_PATTERN)):
            for text in (chr(code), f"a{chr(code)}"):
                try:
                    field.run_validation(text)
                    accepted = True
                except serializers.ValidationError:
                    accepted = False
                assert accepted == bool(re.search(pattern, text)), (hex(code), pattern)


def test_the_email_switches_name_every_kind_and_no_other(schema):
    emails = request_components(schema)["NotificationsRequest"]["properties"]["emails"]
    assert set(emails["properties"]) == set(EMAIL_KINDS)
    assert emails["additionalProperties"] is False


def test_nested_validation_errors_match_the_document(schema, api):
    batch = api.post("/debits/batch", {"debits": [0, {"credits": 1}]})
    assert batch.status_code == 400
    assert_documented(schema, "post", "/api/v1/debits/batch", batch)
    endpoint = api.post("/webhook-endpoints", {"url": "https://example.com/hook", "event_types": [{}]})
    assert endpoint.status_code == 400
    assert_documented(schema, "post", "/api/v1/webhook-endpoints", endpoint)

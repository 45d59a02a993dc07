"""The published API description and the probes (DESIGN.md: Other routes)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern
from drf_spectacular.validation import validate_schema

from config.urls import api_v1

pytestmark = pytest.mark.django_db

# Every POST that moves credits (DESIGN.md, Idempotency).
CREDIT_MOVING = {
    "/api/v1/accounts/{account_id}/debits": "201",
    "/api/v1/accounts/{account_id}/holds": "201",
    "/api/v1/holds/{hold_id}/capture": "200",
    "/api/v1/holds/{hold_id}/release": "200",
    "/api/v1/debits/{debit_id}/refund": "200",
}
AUTH_WRITES = {"/api/v1/auth/signup": "201", "/api/v1/auth/token": "200"}


def openapi_path(pattern: URLPattern) -> str:
    route = str(pattern.pattern)
    return "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def view_methods(pattern: URLPattern) -> set[str]:
    view_class = pattern.callback.view_class  # type: ignore[attr-defined]
    return {m for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m)}


@pytest.fixture
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content[:500]
    assert "json" in response["Content-Type"], response["Content-Type"]
    return json.loads(response.content)


def test_the_schema_is_a_valid_openapi_3_document(schema):
    assert schema["openapi"].startswith("3."), schema["openapi"]
    assert schema["info"]["title"] and schema["info"]["version"]
    validate_schema(schema)  # raises on a document that breaks the OpenAPI 3 JSON schema


def test_the_schema_is_also_served_as_yaml():
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3."), response.content[:100]


def test_every_api_route_is_documented_with_its_methods(schema):
    assert len(api_v1) >= 12
    documented = {
        path: {m for m in ops if m in ("get", "post", "put", "patch", "delete")}
        for path, ops in schema["paths"].items()
    }
    for pattern in api_v1:
        path = openapi_path(pattern)
        assert path in documented, f"{path} ({pattern.name}) is missing from the schema"
        assert documented[path] == view_methods(pattern), (path, documented[path], view_methods(pattern))


def test_the_schema_documents_no_route_that_does_not_exist(schema):
    served = {openapi_path(pattern) for pattern in api_v1}
    assert set(schema["paths"]) <= served, set(schema["paths"]) - served


@pytest.mark.parametrize("path", list(CREDIT_MOVING))
def test_credit_moving_posts_document_the_idempotency_key_header(schema, path):
    parameters = schema["paths"][path]["post"].get("parameters", [])
    headers = [p for p in parameters if p["in"] == "header" and p["name"].lower() == "idempotency-key"]
    assert len(headers) == 1, parameters
    assert headers[0]["required"] is True
    assert headers[0]["schema"]["type"] == "string"


@pytest.mark.parametrize("path", list(CREDIT_MOVING))
def test_credit_moving_posts_document_their_error_responses(schema, path):
    operation = schema["paths"][path]["post"]
    responses = operation["responses"]
    assert CREDIT_MOVING[path] in responses, sorted(responses)
    for status in ("400", "401", "402", "403", "404", "409", "413", "429"):
        assert status in responses, (path, status, sorted(responses))
        assert_error_schema(schema, responses[status])
    assert "idempotency_key_required" in responses["400"]["description"]
    assert "validation_error" in responses["400"]["description"]
    assert "insufficient_credits" in responses["402"]["description"]
    assert "account_suspended" in responses["403"]["description"]
    assert "idempotency_key_reused" in responses["409"]["description"]
    assert "rate_limited" in responses["429"]["description"]


@pytest.mark.parametrize("path", ["/api/v1/holds/{hold_id}/capture", "/api/v1/holds/{hold_id}/release"])
def test_hold_settlement_documents_its_conflicts(schema, path):
    description = schema["paths"][path]["post"]["responses"]["409"]["description"]
    assert "hold_not_pending" in description
    assert "hold_expired" in description


def test_refund_documents_its_conflict(schema):
    description = schema["paths"]["/api/v1/debits/{debit_id}/refund"]["post"]["responses"]["409"]["description"]
    assert "debit_already_refunded" in description


@pytest.mark.parametrize("path", list(AUTH_WRITES))
def test_auth_posts_document_their_success_and_validation_error(schema, path):
    responses = schema["paths"][path]["post"]["responses"]
    assert AUTH_WRITES[path] in responses
    assert "400" in responses
    assert_error_schema(schema, responses["400"])
    assert "requestBody" in schema["paths"][path]["post"]


def test_read_routes_document_authentication_and_not_found(schema):
    for path in (
        "/api/v1/accounts/{account_id}/balance",
        "/api/v1/holds/{hold_id}",
        "/api/v1/accounts/{account_id}/ledger",
    ):
        responses = schema["paths"][path]["get"]["responses"]
        for status in ("200", "401", "403", "404"):
            assert status in responses, (path, status)


def test_spend_request_bodies_document_their_fields(schema):
    body = schema["paths"]["/api/v1/accounts/{account_id}/debits"]["post"]["requestBody"]
    properties = resolve(schema, body["content"]["application/json"]["schema"])["properties"]
    assert {"operation", "credits", "reference", "metadata"} <= set(properties)
    assert properties["credits"]["type"] == "integer"
    body = schema["paths"]["/api/v1/accounts/{account_id}/holds"]["post"]["requestBody"]
    properties = resolve(schema, body["content"]["application/json"]["schema"])["properties"]
    assert {"operation", "credits", "reference", "expires_in"} <= set(properties)
    assert properties["expires_in"]["maximum"] == 86400


def test_the_schema_declares_bearer_authentication(schema):
    """Clients generated from the schema need to know how to authenticate (DESIGN.md: Auth)."""
    schemes = schema.get("components", {}).get("securitySchemes", {})
    bearer = [s for s in schemes.values() if s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"]
    assert bearer, schemes
    name = next(n for n, s in schemes.items() if s in bearer)
    debits = schema["paths"]["/api/v1/accounts/{account_id}/debits"]["post"]
    assert any(name in requirement for requirement in debits.get("security", [])), debits.get("security")


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def assert_error_schema(schema: dict[str, Any], response: dict[str, Any]) -> None:
    body = resolve(schema, response["content"]["application/json"]["schema"])
    error = resolve(schema, body["properties"]["error"])
    assert {"code", "message"} <= set(error["properties"]), error


# --- Docs page and probes ------------------------------------------------------------------------


def test_the_docs_page_is_html_pointing_at_the_schema():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "swagger-ui" in page.lower()
    assert "/api/schema/" in page


def test_healthz_is_up():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database_and_redis():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_is_503_when_redis_is_unreachable(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "redis": "unavailable"}


def test_api_routes_are_top_level_patterns_under_api_v1_with_their_names():
    from django.urls import URLPattern
    from django.urls import resolve as resolve_url

    from config.urls import urlpatterns

    top = {str(p.pattern): p for p in urlpatterns if isinstance(p, URLPattern)}
    for pattern in api_v1:
        served = top.get("api/v1/" + str(pattern.pattern))
        assert served is not None, f"{pattern.name} is not a top-level pattern"
        assert (served.callback, served.name) == (pattern.callback, pattern.name)
    match = resolve_url("/api/v1/accounts/acct_abc/balance")
    assert (match.url_name, match.kwargs, match.route) == (
        "balance",
        {"account_id": "acct_abc"},
        "api/v1/accounts/<pubid:account_id>/balance",
    )

"""The published API description (DESIGN.md: Other routes): a document an integrator can generate a
client from. It passes an OpenAPI validator; each operation has a description, advertises only
the scheme it accepts, and lists every error status it answers with its codes as an enum; every
code the code can raise appears; and real answers, errors included, match what it says."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from billing.models import Hold
from config.urls import api_v1
from notifications.models import AutoRecharge
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
# The routes of these modules use billing/schema.py's and accounts/schema.py's descriptions.
DESCRIBED_MODULES = ("billing.", "accounts.", "console.", "notifications.", "waitlist.")
# Codes the code raises that no API operation answers, and why.
NOT_API_CODES = {
    "error": "DomainError's placeholder; every kind sets its own",
    "billing_error": "BillingError's placeholder",
    "internal_error": "a 500 is a bug, never an answer to bad input",
    "invalid_signature": "only POST /stripe/webhook, which Stripe calls (README)",
    "refund_not_possible": "the admin's refund action only",
    "purchase_grant": "the admin's void action only: a purchase's lot is not voided",
    "method_not_allowed": "any method a path does not list; said once in info.description",
    "verification_link_invalid": "the /verify-email page only (HTML)",
}
CREDIT_MOVING = {
    "/api/v1/accounts/{account_id}/debits": "201",
    "/api/v1/accounts/{account_id}/holds": "201",
    "/api/v1/holds/{hold_id}/capture": "200",
    "/api/v1/holds/{hold_id}/release": "200",
    "/api/v1/debits/{debit_id}/refund": "200",
}


def openapi_path(pattern: URLPattern) -> str:
    return "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))


def view_class(pattern: URLPattern) -> type:
    return pattern.callback.view_class  # type: ignore[attr-defined]


def view_methods(pattern: URLPattern) -> set[str]:
    view = view_class(pattern)
    return {m for m in view.http_method_names if m not in ("options", "head") and hasattr(view, m)}


def described_operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], type]]:
    found = []
    for pattern in api_v1:
        if view_class(pattern).__module__.startswith(DESCRIBED_MODULES):
            path = openapi_path(pattern)
            for method in view_methods(pattern):
                found.append((path, method, schema["paths"][path][method], view_class(pattern)))
    return found


def published_schema() -> dict[str, Any]:
    """The document as the server publishes it at /api/schema/."""
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content[:500]
    assert "json" in response["Content-Type"], response["Content-Type"]
    return json.loads(response.content)


@pytest.fixture
def schema() -> dict[str, Any]:
    return published_schema()


def resolve(schema: dict[str, Any], node: Any) -> Any:
    """`node` with every $ref replaced by what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            return resolve(schema, schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]])
        return {key: resolve(schema, value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(schema, item) for item in node]
    return node


def error_codes(response: dict[str, Any]) -> list[str]:
    return response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]


# --- The document ------------------------------------------------------------------------------


def test_the_schema_passes_an_openapi_validator(schema):
    assert schema["openapi"].startswith("3."), schema["openapi"]
    validate(schema)  # openapi-spec-validator: raises on anything OpenAPI 3 forbids


def test_the_schema_is_also_served_as_yaml():
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3."), response.content[:100]


def test_every_api_route_is_documented_with_its_methods(schema):
    for pattern in api_v1:
        path = openapi_path(pattern)
        assert path in schema["paths"], f"{path} ({pattern.name}) is missing from the schema"
        documented = {m for m in schema["paths"][path] if m in ("get", "post", "put", "patch", "delete")}
        assert documented == view_methods(pattern), (path, documented, view_methods(pattern))
    assert set(schema["paths"]) <= {openapi_path(pattern) for pattern in api_v1}


def test_component_names_are_not_doubled(schema):
    names = set(schema["components"]["schemas"])
    assert {"DebitRequest", "HoldRequest", "Debit", "Hold", "Balance", "LedgerEntry", "Operation"} <= names
    doubled = [n for n in names if n.endswith("RequestRequest") or n.endswith("OutRequest") or n.endswith("Out")]
    assert not doubled, doubled


def test_operation_ids_are_the_views_names_and_unique(schema):
    ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values() if "operationId" in op]
    assert len(ids) == len(set(ids)) >= 20
    paths = schema["paths"]
    assert paths["/api/v1/accounts/{account_id}/debits"]["post"]["operationId"] == "debitCreate"
    assert paths["/api/v1/holds/{hold_id}/capture"]["post"]["operationId"] == "holdCapture"
    assert paths["/api/v1/operations"]["get"]["operationId"] == "operationList"


def test_every_operation_has_a_description(schema):
    for path, method, operation, _ in described_operations(schema):
        assert len(operation.get("description", "")) > 20, (method, path)


def test_each_route_advertises_only_the_scheme_it_accepts(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["serviceKey"] == {**schemes["serviceKey"], "type": "http", "scheme": "bearer"}
    assert schemes["userToken"] == {**schemes["userToken"], "type": "http", "scheme": "bearer"}
    for path, method, operation, view in described_operations(schema):
        names = {permission.__name__ for permission in view.permission_classes}
        if "IsService" in names:
            expected = [{"serviceKey": []}]
        elif "IsEndUser" in names:
            expected = [{"userToken": []}, {"cookieAuth": []}]
        else:
            expected = [{}]
        assert operation["security"] == expected, (method, path, operation["security"])


def test_every_error_response_lists_its_codes_with_their_details(schema):
    for path, method, operation, _ in described_operations(schema):
        errors = {status: r for status, r in operation["responses"].items() if int(status) >= 400}
        assert {"406", "429", "503"} <= set(errors), (method, path, sorted(errors))
        for status, response in errors.items():
            codes = error_codes(response)
            assert codes and all(f"`{code}`" in response["description"] for code in codes), (path, status)
        if "429" in errors:
            details = errors["429"]["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
            assert details["retry_after"]["type"] == "integer"
            assert errors["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
        # A POST that reads no body (setup-intent) cannot refuse one.
        if method in ("post", "put") and ("requestBody" in operation or path in CREDIT_MOVING):
            assert {"400", "413", "415"} <= set(errors), (method, path)
            details = errors["400"]["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
            assert "fields" in details, (method, path)


@pytest.mark.parametrize("path", list(CREDIT_MOVING))
def test_credit_moving_posts_document_the_idempotency_headers(schema, path):
    operation = schema["paths"][path]["post"]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    assert (header["name"], header["required"], header["schema"]["type"]) == ("Idempotency-Key", True, "string")
    responses = operation["responses"]
    assert "Idempotent-Replayed" in responses[CREDIT_MOVING[path]]["headers"]
    assert {"idempotency_key_required", "validation_error"} <= set(error_codes(responses["400"]))
    assert "idempotency_key_reused" in error_codes(responses["409"])


def test_routes_list_the_codes_they_answer(schema):
    paths = schema["paths"]
    debit = paths["/api/v1/accounts/{account_id}/debits"]["post"]["responses"]
    assert error_codes(debit["402"]) == ["insufficient_credits"]
    details = debit["402"]["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
    assert {"available", "requested"} <= set(details)
    assert set(error_codes(debit["403"])) == {"permission_denied", "account_suspended"}
    capture = paths["/api/v1/holds/{hold_id}/capture"]["post"]["responses"]
    assert set(error_codes(capture["409"])) == {"idempotency_key_reused", "hold_not_pending", "hold_expired"}
    assert "402" not in capture
    refund = paths["/api/v1/debits/{debit_id}/refund"]["post"]["responses"]
    assert set(error_codes(refund["409"])) == {"idempotency_key_reused", "debit_already_refunded"}
    checkout = paths["/api/v1/me/checkout"]["post"]["responses"]
    assert error_codes(checkout["502"]) == ["payment_provider_error"]
    assert set(error_codes(checkout["503"])) == {"payments_unavailable", "service_unavailable"}
    assert "404" not in paths["/api/v1/me"]["get"]["responses"]
    assert "405" in schema["info"]["description"] and "method_not_allowed" in schema["info"]["description"]


# --- Every code the code can raise is in the document ------------------------------------------


def raised_codes() -> set[str]:
    """The error codes written in the source of accounts, billing and config: DomainError kinds'
    `code`, ApiError(status, code, ...), error_body(code, ...) and the (status, code) table."""
    codes: set[str] = set()
    for folder in ("accounts", "billing", "config"):
        for source in (ROOT / folder).rglob("*.py"):
            if "migrations" in source.parts:
                continue
            for node in ast.walk(ast.parse(source.read_text())):
                codes |= _codes_in(node)
    return codes


def _codes_in(node: ast.AST) -> set[str]:
    def text(value: ast.AST) -> str | None:
        return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None

    if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["code"]:
        return {code} if (code := text(node.value)) else set()
    if isinstance(node, ast.Call):
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        position = {"ApiError": 1, "error_body": 0, "JsonResponse": None}.get(name)
        if position is not None and len(node.args) > position and (code := text(node.args[position])):
            return {code}
    if isinstance(node, ast.Tuple) and len(node.elts) == 2 and isinstance(node.elts[0], ast.Constant):
        status, code = node.elts[0].value, text(node.elts[1])
        if isinstance(status, int) and 400 <= status < 600 and code and re.fullmatch(r"[a-z_]+", code):
            return {code}
    return set()


def test_every_code_the_code_can_raise_is_in_the_document(schema):
    raised = raised_codes()
    assert {"insufficient_credits", "hold_expired", "unsupported_media_type", "service_unavailable"} <= raised
    documented: set[str] = set()
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and "content" in response:
                    schema_of = response["content"]["application/json"]["schema"]
                    code = schema_of.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
                    documented |= set(code.get("enum", []))
    missing = raised - documented - set(NOT_API_CODES)
    assert not missing, f"raised but not in the schema: {sorted(missing)}"
    assert not set(NOT_API_CODES) & documented


# --- Real answers match the document ----------------------------------------------------------


def assert_documented(schema: dict[str, Any], method: str, path: str, response: Any) -> None:
    """The answer's status is listed for the operation, its body matches that response's schema,
    and an error's code is one the operation lists for that status."""
    operation = schema["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], (method, path, status, response.content[:300])
    documented = operation["responses"][status]
    if "content" in documented:
        body_schema = resolve(schema, documented["content"]["application/json"]["schema"])
        errors = sorted(OAS30Validator(body_schema).iter_errors(response.json()), key=str)
        assert not errors, (method, path, status, [e.message for e in errors][:3], response.json())
    if int(status) >= 400:
        assert response.json()["error"]["code"] in error_codes(documented)
    for header in documented.get("headers", {}):
        if header in ("Retry-After", "WWW-Authenticate"):
            assert response.has_header(header), (path, status, header)


def test_answers_of_the_spend_routes_match_the_document(schema, api, user_api):
    users, _ = user_api
    rich, poor, suspended = make_account(), make_account(), make_account(status="suspended")
    give(rich, 50)
    debits, holds = "/api/v1/accounts/{account_id}/debits", "/api/v1/accounts/{account_id}/holds"
    spend = {"credits": 2, "reference": "job-1"}
    checks = [
        ("post", debits, api.post(f"/accounts/{rich.public_id}/debits", spend)),  # 201
        ("post", debits, api.post(f"/accounts/{poor.public_id}/debits", {"credits": 90, "reference": "r"})),  # 402
        ("post", debits, api.post(f"/accounts/{suspended.public_id}/debits", spend)),  # 403 suspended
        ("post", debits, users.post(f"/accounts/{rich.public_id}/debits", spend)),  # 403 permission
        ("post", debits, api.post("/accounts/acct_nobody/debits", spend)),  # 404
        ("post", debits, api.post(f"/accounts/{rich.public_id}/debits", spend, idem=None)),  # 400 key
        ("post", debits, api.post(f"/accounts/{rich.public_id}/debits", {"operation": "x", "reference": "r"})),
        ("post", debits, api.post(f"/accounts/{rich.public_id}/debits", raw=b"a=1", content_type="text/plain")),
        ("post", debits, api.post(f"/accounts/{rich.public_id}/debits", raw=b"{" + b" " * 70_000 + b"}")),
        ("post", debits, Api("sk_wrong").post(f"/accounts/{rich.public_id}/debits", spend)),  # 401
        ("get", "/api/v1/accounts/{account_id}/balance", api.get(f"/accounts/{rich.public_id}/balance")),
        ("get", "/api/v1/accounts/{account_id}/ledger", api.get(f"/accounts/{rich.public_id}/ledger", limit=2)),
        ("get", "/api/v1/accounts/{account_id}/ledger", api.get(f"/accounts/{rich.public_id}/ledger", cursor="x")),
        ("get", "/api/v1/me/ledger", users.get("/me/ledger")),
        ("get", "/api/v1/me", users.get("/me")),
        ("get", "/api/v1/operations", Api().get("/operations")),
        ("get", "/api/v1/packs", Api("not a key").get("/packs")),  # 401: a malformed header
    ]
    reused = api.new_key()
    checks.append(("post", debits, api.post(f"/accounts/{rich.public_id}/debits", spend, idem=reused)))
    other = {**spend, "credits": 3}
    checks.append(("post", debits, api.post(f"/accounts/{rich.public_id}/debits", other, idem=reused)))
    hold = api.post(f"/accounts/{rich.public_id}/holds", spend).json()["id"]
    checks.append(("get", "/api/v1/holds/{hold_id}", api.get(f"/holds/{hold}")))
    capture = "/api/v1/holds/{hold_id}/capture"
    checks.append(("post", capture, api.post(f"/holds/{hold}/capture", {"credits": 5})))  # 400 over held
    checks.append(("post", capture, api.post(f"/holds/{hold}/capture", {})))  # 200
    checks.append(("post", capture, api.post(f"/holds/{hold}/capture", {})))  # 409 not pending
    checks.append(("post", "/api/v1/holds/{hold_id}/release", api.post(f"/holds/{hold}/release", {})))
    debit = api.post(f"/accounts/{rich.public_id}/debits", spend).json()["id"]
    refund = "/api/v1/debits/{debit_id}/refund"
    checks.append(("post", refund, api.post(f"/debits/{debit}/refund", {})))
    checks.append(("post", refund, api.post(f"/debits/{debit}/refund", {})))  # 409 already refunded
    checks.append(("post", holds, api.post(f"/accounts/{rich.public_id}/holds", {**spend, "expires_in": 0})))
    statuses = set()
    for method, path, response in checks:
        assert_documented(schema, method, path, response)
        statuses.add(response.status_code)
    assert {200, 201, 400, 401, 402, 403, 404, 409, 413, 415} <= statuses
    assert Hold.objects.filter(public_id=hold).exists()


def test_a_rate_limited_answer_matches_the_document(schema, api, account, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "service": 1}
    path = f"/accounts/{account.public_id}/balance"
    assert api.get(path).status_code == 200
    limited = api.get(path)
    assert limited.status_code == 429
    assert_documented(schema, "get", "/api/v1/accounts/{account_id}/balance", limited)


# --- Docs page and probes ------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "marker"), [("/api/docs/", "swagger-ui"), ("/api/redoc/", "redoc")])
def test_the_docs_pages_load_their_scripts_from_this_server(path, marker):
    response = Client().get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    if "?script=" in page:  # Swagger UI's start-up script is a file of its own (no inline script: CSP)
        page += Client().get(f"{path}?script=").content.decode()
    assert marker in page.lower() and "/api/schema/" in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/static/") or s.startswith("/api/") for s in sources), sources
    for source in sources:
        if source.startswith("/static/"):
            assert b"".join(Client().get(source).streaming_content), source


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


# Readiness with Redis or PostgreSQL down: tests/accounts/test_redis_outage.py, tests/test_database_outage.py.


def test_api_routes_are_top_level_patterns_under_api_v1_with_their_names():
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


def test_the_auto_recharge_answers_match_the_document_with_and_without_a_card(schema, user_api):
    users, user = user_api
    path = "/api/v1/me/auto-recharge"
    assert users.get("/me/auto-recharge").json()["card"] is None
    assert_documented(schema, "get", path, users.get("/me/auto-recharge"))
    card = {"stripe_payment_method_id": "pm_1", "card_brand": "visa", "card_last4": "4242"}
    AutoRecharge.objects.update_or_create(account=user.account, defaults=card)
    answer = users.get("/me/auto-recharge")
    assert answer.json()["card"] == {"brand": "visa", "last4": "4242"}
    assert_documented(schema, "get", path, answer)

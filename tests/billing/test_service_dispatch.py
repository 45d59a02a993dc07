"""The service routes' lean dispatch (config/lean_dispatch.py) answers exactly as DRF's does.

Each scenario runs twice on fresh, identical state under a frozen clock: once with the lean
path, once with plain APIView behaviour (`lean_dispatch = False`), and the two runs must give the
same statuses, headers and bodies (public ids and row ids, which differ between runs, are
numbered by first appearance). The scenarios cover every route and the errors the contract
names (401 with WWW-Authenticate, 403, 405 with Allow, 406, 413, 415, 400 for bad JSON, 429
with Retry-After) plus replays and content negotiation. Other tests pin the absolute answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.views import APIView

from accounts.models import Account
from accounts.services import service_key_create, user_token_create
from billing import api as billing_api
from billing.api import ServiceView
from billing.models import ActorType, IdempotencyKey
from billing.schema import BALANCE_DOC
from billing.services.ledger import Actor, debit_create, hold_create
from config import lean_dispatch
from config.lean_dispatch import LeanAPIView
from tests.accounts.factories import UserFactory
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db

SERVICE_VIEWS = [
    billing_api.BalanceView,
    billing_api.DebitCreateView,
    billing_api.DebitBatchView,
    billing_api.DebitRefundView,
    billing_api.HoldCreateView,
    billing_api.HoldDetailView,
    billing_api.HoldCaptureView,
    billing_api.HoldReleaseView,
    billing_api.LedgerView,
]


@dataclass
class World:
    service: Api
    user_token: Api
    session: Client
    anon: Api
    account: Account
    debit: str
    hold: str

    def post(self, path: str, body: Any = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.service.post(path, body, **kwargs)


def make_world() -> World:
    _, raw = service_key_create(name="generation")
    account = make_account()
    give(account, 20)
    actor = Actor(ActorType.SERVICE, "setup")
    debit = debit_create(account=account, credits=2, reference="setup", actor=actor)
    hold = hold_create(account=account, credits=3, expires_in=900, reference="setup", actor=actor)
    user = UserFactory()
    _, token = user_token_create(user=user)
    session = Client(enforce_csrf_checks=True)
    session.force_login(user)
    service = Api(raw)
    service.client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"  # for requests made with .client
    return World(
        service=service,
        user_token=Api(token),
        session=session,
        anon=Api(),
        account=account,
        debit=debit.public_id,
        hold=hold.public_id,
    )


Answer = tuple[int, dict[str, str], str]


def answer(response) -> Answer:  # type: ignore[no-untyped-def]
    headers = dict(response.items())
    # The length follows the body, whose row ids may differ in digits between runs: checked here,
    # then compared through the body (a HEAD response keeps the length of the body it omits).
    length = headers.pop("Content-Length", None)
    if response.content:
        assert length == str(len(response.content)), (length, len(response.content))
    return response.status_code, headers, response.content.decode()


_PUBLIC_ID = re.compile(r"\b(?:acct|deb|hold|pur|sk|ut)_[A-Za-z0-9]{16,}\b")
_ROW_ID = re.compile(r'"(id|next_cursor|grant|debit|hold)": ?("[^"]*"|\d+)')


def numbered(answers: list[Answer]) -> list[Answer]:
    """The answers with run-specific ids replaced by their order of first appearance."""
    seen: dict[str, str] = {}

    def number(value: str) -> str:
        return seen.setdefault(value, f"<{len(seen)}>")

    out = []
    for status, headers, body in answers:
        body = _PUBLIC_ID.sub(lambda m: number(m.group(0)), body)
        body = _ROW_ID.sub(lambda m: f'"{m.group(1)}": {number(m.group(2))}', body)
        out.append((status, headers, body))
    return out


def run_both(scenario: Callable[[World], Iterator[Any]], monkeypatch) -> list[Answer]:  # type: ignore[no-untyped-def]
    """The scenario's answers on the lean path, after checking they equal DRF dispatch's."""
    runs = {}
    start = timezone.now()
    for lean in (False, True):
        monkeypatch.setattr(ServiceView, "lean_dispatch", lean)
        cache.clear()
        IdempotencyKey.objects.all().delete()  # every service key shares one key space
        with time_machine.travel(start, tick=False):
            world = make_world()
            runs[lean] = numbered([answer(response) for response in scenario(world)])
    for index, (drf, lean) in enumerate(zip(runs[False], runs[True], strict=True)):
        assert lean == drf, f"request {index} answers differently on the lean path"
    return runs[True]


def bearer(world: World, value: str) -> Api:
    api = Api()
    api.client.defaults["HTTP_AUTHORIZATION"] = value
    return api


def every_route(world: World) -> list[tuple[str, str]]:
    acct = world.account.public_id
    return [
        ("GET", f"/accounts/{acct}/balance"),
        ("POST", f"/accounts/{acct}/debits"),
        ("POST", "/debits/batch"),
        ("POST", f"/debits/{world.debit}/refund"),
        ("POST", f"/accounts/{acct}/holds"),
        ("GET", f"/holds/{world.hold}"),
        ("POST", f"/holds/{world.hold}/capture"),
        ("POST", f"/holds/{world.hold}/release"),
        ("GET", f"/accounts/{acct}/ledger"),
    ]


def call(api: Api, method: str, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    if method == "GET":
        return api.get(path, **kwargs)
    return api.post(path, {}, **kwargs)


# --- who is calling ---------------------------------------------------------------------------


def test_callers_that_are_not_a_service_get_the_same_401_and_403(monkeypatch):
    def scenario(world: World) -> Iterator[Any]:
        for method, path in every_route(world):
            yield call(world.anon, method, path)  # no credentials: 401
            yield call(bearer(world, "Basic abc"), method, path)  # malformed header: 401
            yield call(bearer(world, "Bearer sk_not-a-key"), method, path)  # unknown key: 401
            yield call(world.user_token, method, path)  # an end user's token: 403
            session_call = world.session.get if method == "GET" else world.session.post
            yield session_call(f"/api/v1{path}")  # a session: 403 (CSRF failure on a POST)

    answers = run_both(scenario, monkeypatch)
    statuses = {status for status, _, _ in answers}
    assert statuses == {401, 403}
    for status, headers, body in answers:
        code = json.loads(body)["error"]["code"]
        if status == 401:
            assert (code, headers["WWW-Authenticate"]) == ("authentication_failed", "Bearer")
        else:
            assert code == "permission_denied" and "WWW-Authenticate" not in headers


def test_a_service_key_gets_the_same_answers_on_every_route(monkeypatch):
    def scenario(world: World) -> Iterator[Any]:
        acct = world.account.public_id
        yield world.service.get(f"/accounts/{acct}/balance")
        yield world.service.get(f"/holds/{world.hold}")
        yield world.service.get(f"/accounts/{acct}/ledger", limit=2)
        yield world.service.get(f"/accounts/{acct}/ledger", limit=0)  # 400
        yield world.post(f"/accounts/{acct}/debits", {"credits": 1, "reference": "a"}, idem="d-1")
        yield world.post(f"/accounts/{acct}/debits", {"credits": 1, "reference": "a"}, idem="d-1")  # replay
        yield world.post(f"/accounts/{acct}/debits", {"credits": 2, "reference": "a"}, idem="d-1")  # 409
        yield world.post(f"/accounts/{acct}/debits", {"credits": 999, "reference": "a"})  # 402
        yield world.post(f"/accounts/{acct}/debits", {"operation": "generation", "reference": "b"})
        yield world.post(f"/accounts/{acct}/debits", {"credits": 1, "reference": "c"}, idem=None)  # 400
        yield world.post("/accounts/acct_missing/debits", {"credits": 1, "reference": "c"})  # 404
        yield world.post(f"/accounts/{acct}/holds", {"credits": 2, "reference": "h"}, idem="h-1")
        yield world.post(f"/holds/{world.hold}/capture", {"credits": 1}, idem="c-1")
        yield world.post(f"/holds/{world.hold}/release", {}, idem="r-1")  # 409 hold_not_pending
        yield world.post(f"/debits/{world.debit}/refund", {}, idem="f-1")
        batch = {"debits": [{"account_id": acct, "idempotency_key": "b-1", "credits": 1, "reference": "x"}]}
        yield world.post("/debits/batch", batch)
        yield world.post("/debits/batch", {"debits": "no"})  # 400
        yield world.service.get(f"/accounts/{acct}/balance")

    answers = run_both(scenario, monkeypatch)
    assert [status for status, _, _ in answers] == [
        200, 200, 200, 400, 201, 201, 409, 402, 201, 400, 404, 201, 200, 409, 200, 200, 400, 200
    ]  # fmt: skip
    assert answers[5][1]["Idempotent-Replayed"] == "true"
    for _, headers, _ in answers:
        assert headers["Content-Type"] == "application/json"
        assert headers["Allow"] in ("GET, HEAD, OPTIONS", "POST, OPTIONS")


# --- methods, negotiation, bodies -------------------------------------------------------------


def test_wrong_methods_head_and_options_answer_the_same(monkeypatch):
    def scenario(world: World) -> Iterator[Any]:
        client = world.service.client
        for _, path in every_route(world):
            url = f"/api/v1{path}"
            yield client.put(url)
            yield client.delete(url)
            yield client.patch(url)
            yield client.head(url)
            yield client.options(url)
            yield client.generic("PROPFIND", url)
            yield world.anon.client.put(url)  # 401 before 405, as in DRF
            yield world.anon.client.options(url)

    answers = run_both(scenario, monkeypatch)
    not_allowed = [(headers, body) for status, headers, body in answers if status == 405]
    assert len(not_allowed) == 9 * 4 + 6  # put, delete, patch, PROPFIND everywhere; HEAD on the 6 POST routes
    for headers, body in not_allowed:
        assert body == "" or json.loads(body)["error"]["code"] == "method_not_allowed"  # HEAD has no body
        assert headers["Allow"] in ("GET, HEAD, OPTIONS", "POST, OPTIONS")


ACCEPT_HEADERS = [
    "*/*",
    "application/json",
    "application/*",
    "application/json; indent=4",
    "application/json; indent=99",
    "text/html",
    "text/html, application/json;q=0.5",
    "application/xml",
    "",
    "application/json; version=2",
    "x" * 300,
    "x" * 300 + ", application/json",
]


def test_content_negotiation_answers_the_same(monkeypatch):
    def scenario(world: World) -> Iterator[Any]:
        acct = world.account.public_id
        for accept in ACCEPT_HEADERS:
            headers = {"Accept": accept}
            yield world.service.get(f"/accounts/{acct}/balance", headers=headers)
            yield world.service.post(f"/accounts/{acct}/debits", {"credits": 1, "reference": "a"}, headers=headers)
            yield world.anon.get(f"/accounts/{acct}/balance", headers=headers)  # 406 comes before 401
        for fmt in ("json", "xml", "api", ""):
            yield world.service.get(f"/accounts/{acct}/balance", format=fmt)
            yield world.service.get(f"/accounts/{acct}/ledger", format=fmt, limit=1)
        yield world.service.client.get(f"/api/v1/accounts/{acct}/balance", {"format": ["xml", "json"]})

    answers = run_both(scenario, monkeypatch)
    statuses = {status for status, _, _ in answers}
    assert {200, 201, 401, 404, 406} <= statuses, statuses
    indented = answers[ACCEPT_HEADERS.index("application/json; indent=4") * 3]
    assert indented[0] == 200 and indented[2].startswith('{\n    "account"')


BODIES: list[tuple[str | bytes, str]] = [
    ('{"credits": 1, "reference": "ok"}', "application/json"),
    ('{"credits": 1, "reference": "ok"}', "application/json; charset=utf-8"),
    ('{"credits": 1, "reference": "caf\xe9"}'.encode("latin-1"), "application/json; charset=latin-1"),
    ('{"credits": 1, "reference": "x"}', "application/json; charset=nonsense"),
    ("{not json", "application/json"),
    (b'{"credits": 1, "reference": "\xff"}', "application/json"),
    (b'{"credits": 1, "reference": "\xc3', "application/json"),
    ("[" * 30_000 + "]" * 30_000, "application/json"),
    ("[" * 100_000 + "]" * 100_000, "application/json"),
    ("[1, 2]", "application/json"),
    ('{"credits": NaN, "reference": "x"}', "application/json"),
    ("", "application/json"),
    ('{"credits": 1, "reference": "x"}', ""),
    ('{"credits": 1, "reference": "x"}', "text/plain"),
    ("credits=1&reference=x", "application/x-www-form-urlencoded"),
    ('{"credits": 1, "reference": "x"}', "application/vnd.api+json"),
    ('{"credits": 1, "reference": "x"}', "application/json" + " " * 300),
    ('{"reference": "' + "x" * 2_000_000 + '"}', "application/json"),
]


def test_request_bodies_are_parsed_and_refused_the_same(monkeypatch):
    def scenario(world: World) -> Iterator[Any]:
        acct = world.account.public_id
        for n, (body, content_type) in enumerate(BODIES):
            for path, key in [
                (f"/accounts/{acct}/debits", f"d-{n}"),
                (f"/holds/{world.hold}/capture", f"c-{n}"),
                ("/debits/batch", None),
                # Without an Idempotency-Key: which error comes first must not change either.
                (f"/accounts/{acct}/debits", None),
            ]:
                headers = {"Idempotency-Key": key} if key else {}
                yield world.service.client.generic("POST", f"/api/v1{path}", body, content_type, headers=headers)

    answers = run_both(scenario, monkeypatch)
    codes = {(status, json.loads(body)["error"]["code"]) for status, _, body in answers if status >= 400}
    assert {
        (400, "validation_error"),
        (400, "idempotency_key_required"),
        (413, "request_too_large"),
        (415, "unsupported_media_type"),
    } <= codes, codes


def test_the_rate_limit_answers_the_same(monkeypatch, settings):
    settings.RATE_LIMITS = {"service": 3, "user": 3, "anon": 3}

    def scenario(world: World) -> Iterator[Any]:
        acct = world.account.public_id
        for _ in range(3):
            yield world.service.get(f"/accounts/{acct}/balance")
        yield world.service.get(f"/accounts/{acct}/balance")  # 429
        yield world.post(f"/accounts/{acct}/debits", {"credits": 1, "reference": "r"}, idem="k")  # 429
        yield world.anon.get(f"/accounts/{acct}/balance")  # 401: the limit counts service keys here
        yield world.user_token.get(f"/accounts/{acct}/balance")  # 403

    answers = run_both(scenario, monkeypatch)
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429, 401, 403]
    for _, headers, body in answers[3:5]:
        error = json.loads(body)["error"]
        assert error["code"] == "rate_limited"
        assert headers["Retry-After"] == str(error["retry_after"])


# --- the lean path is the one that runs -------------------------------------------------------


def test_service_routes_negotiate_each_accept_header_once(api, account, monkeypatch):
    assert ServiceView.lean_dispatch
    assert all(issubclass(view, LeanAPIView) for view in SERVICE_VIEWS)
    lean_dispatch._negotiated.cache_clear()
    # The ledger route: the balance route answers its common read before DRF's dispatch.
    route = f"/accounts/{account.public_id}/ledger"
    assert api.get(route).status_code == 200
    assert api.get(route, headers={"Accept": "*/*"}).status_code == 200

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("negotiated again")

    monkeypatch.setattr(DefaultContentNegotiation, "select_renderer", refuse)
    for _ in range(3):
        assert api.get(route).status_code == 200
        assert api.get(route, headers={"Accept": "*/*"}).status_code == 200
    # With metadata: the debit route's common call (debit_write) leaves it to DRF's dispatch.
    response = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r", "metadata": {}})
    assert response.status_code == 201, response.content
    info = lean_dispatch._negotiated.cache_info()
    assert (info.misses, info.hits) == (2, 7)


def test_the_schema_is_the_one_drf_dispatch_would_give():
    """drf-spectacular reads the views, not the dispatch: swapping LeanAPIView out for APIView
    must not change a byte of the published schema."""

    def schema() -> bytes:
        response = Client().get("/api/schema/", {"format": "json"})
        assert response.status_code == 200
        return response.content

    lean = schema()
    ServiceView.__bases__ = (APIView,)
    try:
        assert not issubclass(billing_api.BalanceView, LeanAPIView)
        plain = schema()
    finally:
        ServiceView.__bases__ = (LeanAPIView,)
    assert plain == lean
    paths = json.loads(lean)["paths"]
    balance = paths["/api/v1/accounts/{account_id}/balance"]["get"]
    assert set(balance["responses"]) == {"200", "401", "403", "404", "406", "429", "503"}
    # drf-spectacular publishes a view's (inherited) docstring as the description: the route's own
    # description, not a docstring, is what shows.
    assert balance["description"] == BALANCE_DOC

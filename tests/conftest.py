from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from accounts.ratelimit import limiter
from accounts.services import service_key_create, user_token_create
from billing.integrity import ledger_breaches
from billing.quotas import quota_policy_forget
from tests.billing.factories import give, make_account


class Api:
    """A JSON client for the API with a bearer key and idempotency keys made on request."""

    def __init__(self, key: str | None = None) -> None:
        self.client = Client()
        self.key = key
        self._n = 0

    def _headers(self, idem: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if idem is not None:
            headers["Idempotency-Key"] = idem
        headers.update(extra or {})
        return headers

    def new_key(self) -> str:
        self._n += 1
        return f"test-{id(self)}-{self._n}"

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any):  # type: ignore[no-untyped-def]
        return self.client.get(f"/api/v1{path}", params, headers=self._headers(None, headers))

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        idem: str | None = "auto",
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ):  # type: ignore[no-untyped-def]
        if idem == "auto":
            idem = self.new_key()
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(f"/api/v1{path}", data, content_type=content_type, headers=self._headers(idem, headers))


@pytest.fixture(autouse=True)
def _seeded(request):
    """Transactional tests empty every table at teardown, rows from data migrations included;
    put the defaults (operations, the credit pack) back for each test that uses the database."""
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    transactional = (
        "transactional_db" in names
        or "live_server" in names
        or (marker is not None and marker.kwargs.get("transaction", False))
    )
    if transactional:
        request.getfixturevalue("transactional_db")
    elif marker is not None or "db" in names:
        request.getfixturevalue("db")
    else:
        yield
        return
    from billing.services.seed import seed_defaults

    seed_defaults()
    yield


@pytest.fixture
def pack(db):
    """The seeded 115-credit pack (put back by _seeded after transactional tests)."""
    from billing.models import CreditPack

    return CreditPack.objects.get(slug="credits-115")


@pytest.fixture
def stripe_keys(settings):
    from tests.billing.stripe_support import SECRET_KEY, WEBHOOK_SECRET

    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = ""
    return settings


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    limiter.forget()  # the blocks of counts this process reserved in the cache just cleared
    quota_policy_forget()  # the billing policy's quotas, remembered per process for a few seconds
    yield


@pytest.fixture
def eager_tasks():
    """Celery tasks queued during the test run on the spot (mail lands in mail.outbox)."""
    from config.celery import app as celery_app

    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def service_key(db) -> str:
    _, raw = service_key_create(name="generation")
    return raw


@pytest.fixture
def api(service_key) -> Api:
    return Api(service_key)


@pytest.fixture
def anon() -> Api:
    return Api()


@pytest.fixture
def account(db):
    acct = make_account()
    give(acct, 10)
    return acct


@pytest.fixture
def user_api(db):
    from tests.accounts.factories import UserFactory

    user = UserFactory()
    _, raw = user_token_create(user=user)
    return Api(raw), user


@pytest.fixture
def assert_ledger_clean():
    def check() -> None:
        breaches = ledger_breaches()
        assert breaches == [], "\n".join(map(str, breaches))

    return check


@pytest.fixture
def run_check_ledger():
    def run() -> tuple[int, str]:
        from io import StringIO

        out = StringIO()
        try:
            call_command("check_ledger", stdout=out)
            return 0, out.getvalue()
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue()

    return run

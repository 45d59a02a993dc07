"""/metrics: requests counted and timed by route, the ledger's state, the token, and the figures
of several gunicorn workers added up (config/metrics.py, billing/metrics.py)."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import Account
from billing.models import Grant
from billing.services.ledger import Actor, hold_create
from tests.billing.factories import give, make_account
from tests.conftest import Api
from tests.private_servers import PrivateRedis

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-0123456789"
GUNICORN = Path(sys.executable).parent / "gunicorn"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client: Client | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or Client()).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def requests_of(found, route: str, status: str, method: str = "GET") -> float:  # type: ignore[no-untyped-def]
    key = ("billing_http_requests_total", (("method", method), ("route", route), ("status", status)))
    return found.get(key, 0.0)


def timed(found, route: str) -> float:  # type: ignore[no-untyped-def]
    return found.get(("billing_http_request_duration_seconds_count", (("route", route),)), 0.0)


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_STATE_SECONDS = 0
    return TOKEN


def test_it_answers_only_the_configured_token(settings):
    settings.METRICS_TOKEN = ""
    off = Client().get("/metrics")
    assert off.status_code == 403 and off.json()["error"]["code"] == "permission_denied"

    settings.METRICS_TOKEN = TOKEN
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        refused = Client().get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "authentication_failed"
        assert b"billing_" not in refused.content
    posted = Client().post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"
    assert Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert Client().get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_requests_are_counted_and_timed_by_route_method_and_status(token, service_key):
    account = make_account()
    give(account, 3)
    api = Api(service_key)
    before = scrape()

    for _ in range(3):
        assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
    assert api.get("/accounts/acct_doesnotexist/balance").status_code == 404
    assert Api("sk_" + "x" * 40).get(f"/accounts/{account.public_id}/balance").status_code == 401
    assert Client().get("/no/such/page").status_code == 404
    assert Client().generic("BREW", "/healthz").status_code == 200
    after = scrape()

    assert requests_of(after, "balance", "200") - requests_of(before, "balance", "200") == 3
    assert requests_of(after, "balance", "404") - requests_of(before, "balance", "404") == 1
    assert requests_of(after, "balance", "401") - requests_of(before, "balance", "401") == 1
    assert timed(after, "balance") - timed(before, "balance") == 5
    assert requests_of(after, "unmatched", "404") - requests_of(before, "unmatched", "404") == 1
    assert requests_of(after, "healthz", "200", method="other") - requests_of(before, "healthz", "200", "other") == 1
    assert requests_of(after, "metrics", "200") - requests_of(before, "metrics", "200") == 1  # the first scrape


def test_the_ledger_state_is_what_the_database_holds(token):
    now = timezone.now()
    rich = make_account()
    give(rich, 40, source=Grant.Source.PURCHASE, expires_at=now + timedelta(days=365))
    give(rich, 7)
    hold_create(account=rich, credits=2, expires_in=600, actor=Actor("service", "1"), now=now)
    # Made "earlier", so that it is lapsed now, and pending until the release job or a read settles it.
    hold_create(account=rich, credits=5, expires_in=60, actor=Actor("service", "1"), now=now - timedelta(seconds=120))
    suspended = make_account(status=Account.Status.SUSPENDED)
    give(suspended, 9)
    give(suspended, 4, expires_at=now - timedelta(seconds=1), now=now - timedelta(days=1))  # lapsed lot

    found = scrape()

    def gauge(name: str, label: str, value: str) -> float:
        return found[(name, ((label, value),))]

    for status in (Account.Status.ACTIVE, Account.Status.SUSPENDED):
        accounts = Account.objects.filter(status=status)
        assert gauge("billing_accounts", "status", status) == accounts.count()
        assert gauge("billing_credits_available", "status", status) == sum(a.available_credits for a in accounts)
        assert gauge("billing_credits_held", "status", status) == sum(a.held_credits for a in accounts)
    assert gauge("billing_credits_held", "status", "active") == 7
    live = Grant.objects.filter(remaining__gt=0).exclude(expires_at__lte=now)
    paid = sum(g.remaining for g in live if g.source == Grant.Source.PURCHASE)
    assert gauge("billing_credits_remaining", "kind", "paid") == paid > 0
    assert gauge("billing_credits_remaining", "kind", "free") == sum(g.remaining for g in live) - paid > 0
    assert gauge("billing_holds_pending", "state", "lapsed") == 1
    assert gauge("billing_holds_pending", "state", "open") == 1
    assert gauge("billing_purchases", "status", "paid") == 0
    assert found[("billing_state_up", ())] == 1


def test_the_state_is_read_once_per_interval_and_a_failed_read_does_not_fail_the_scrape(token, settings):
    settings.METRICS_STATE_SECONDS = 30
    active = ("billing_accounts", (("status", "active"),))
    first = scrape()
    make_account()
    assert scrape()[active] == first[active]  # the cached read
    settings.METRICS_STATE_SECONDS = 0
    assert scrape()[active] == first[active] + 1

    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("ALTER TABLE billing_stripeevent RENAME TO billing_stripeevent_away")
    broken = scrape()
    assert broken[("billing_state_up", ())] == 0
    assert active not in broken
    assert any(name == "billing_http_requests_total" for name, _ in broken)


def test_a_scrape_with_redis_down_answers_the_state_and_counts_the_failure(token, settings):
    """The state's cached copy lives in Redis: with Redis unreachable the scrape reads the
    database and answers, and the failures are counted (what an outage alert watches)."""
    server = PrivateRedis()
    server.start()
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.ReusedClientRedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.METRICS_STATE_SECONDS = 30
    server.stop()
    failed = ("billing_dependency_failures_total", (("dependency", "redis"), ("use", "metrics")))
    before = scrape().get(failed, 0.0)
    after = scrape()
    assert after[("billing_state_up", ())] == 1
    assert ("billing_accounts", (("status", "active"),)) in after
    assert after[failed] >= before + 3  # the cached copy's read and its write, and the audits' gauges


@pytest.mark.parametrize(
    "name, value",
    [
        ("METRICS_TOKEN", "too-short"),
        ("METRICS_TOKEN", "a-long-enough token"),
        ("METRICS_TOKEN", "t\u00f6ken-with-a-non-ascii-letter"),
        ("METRICS_STATE_SECONDS", "-1"),
        ("METRICS_STATE_SECONDS", "soon"),
    ],
)
def test_a_malformed_metrics_setting_stops_start_up_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        runpy.run_path(str(ROOT / "config" / "settings" / "base.py"))


# --- several gunicorn workers, as production runs them ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Server:
    """gunicorn with config/gunicorn.py and the production settings on this test's database."""

    def __init__(self, tmp_path: Path, metrics_dir: Path) -> None:
        from tests.billing.test_celery_integration import this_database_url

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings.production",
            DATABASE_URL=this_database_url(),
            REDIS_URL=settings.REDIS_URL,
            DJANGO_SECRET_KEY="metrics-test-" + "k" * 40,
            PUBLIC_ID_KEY="metrics-test-public-ids",
            METRICS_TOKEN=TOKEN,
            METRICS_STATE_SECONDS="0",
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            WEB_CONCURRENCY="2",
            PORT=str(self.port),
            GUNICORN_LOG_LEVEL="warning",
            GUNICORN_CLIENT_TIMEOUT="300",  # held_healthz keeps a request half-sent on purpose
        )
        self.log = tmp_path / f"gunicorn-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(GUNICORN), "-c", "config/gunicorn.py", "config.wsgi"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        self.answered = 0  # /healthz calls answered 200
        deadline = time.monotonic() + 30
        while not self.healthz():
            assert time.monotonic() < deadline and self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)

    def healthz(self) -> bool:
        try:
            ok = get(f"{self.base}/healthz")[0] == 200
        except OSError:
            return False
        self.answered += ok
        return ok

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = get(f"{self.base}/metrics", TOKEN)
        assert status == 200, text
        return samples(text)

    def held_healthz(self) -> socket.socket:
        """A /healthz call sent all but its last line: the sync worker that takes it waits for the
        rest, and every later call goes to another worker until `finish_healthz` sends it."""
        held = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        return held

    def finish_healthz(self, held: socket.socket) -> None:
        with held:
            held.sendall(b"\r\n")
            answer = b""
            while chunk := held.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        self.answered += 1

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_the_workers_figures_are_added_up_and_a_restart_starts_from_zero(tmp_path):
    make_account()  # committed: the server's workers see it
    metrics_dir = tmp_path / "metrics"
    server = Server(tmp_path, metrics_dir)
    try:
        # One worker waits on a held call while the other answers the 200 calls; then the held
        # call is answered too. The kernel alone would be free to give every call to one worker.
        held = server.held_healthz()
        threads = [threading.Thread(target=lambda: [server.healthz() for _ in range(25)]) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        server.finish_healthz(held)
        assert server.answered == 202
        found = server.scrape()
        # Both workers answered some, each kept its own file, and the scrape adds them up.
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2
        assert requests_of(found, "healthz", "200") == 202
        assert timed(found, "healthz") == 202
        assert found[("billing_accounts", (("status", "active"),))] == Account.objects.count() == 1
    finally:
        server.stop()

    again = Server(tmp_path, metrics_dir)  # the same directory: the old files are removed
    try:
        assert requests_of(again.scrape(), "healthz", "200") == again.answered < 202
    finally:
        again.stop()

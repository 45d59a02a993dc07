"""An unset DJANGO_SETTINGS_MODULE never means DEBUG: the web server's and the worker's entry
points load the production settings, which refuse to start without their secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a-production-secret-key-of-forty-characters"
SECRETS = {"DJANGO_SECRET_KEY": SECRET, "PUBLIC_ID_KEY": "a-production-public-id-key"}

SHOW = "from django.conf import settings; print(settings.SETTINGS_MODULE, settings.DEBUG)"
ENTRY_POINTS = {
    "web": f"import config.wsgi; {SHOW}",
    "worker": f"from config.celery import app; app.loader.import_default_modules(); {SHOW}",
}


def run(code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "PUBLIC_ID_KEY"))}
    env.update(DATABASE_URL="postgres://postgres@127.0.0.1:5432/billing", **extra)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_an_entry_point_without_settings_named_runs_production_without_debug(entry):
    done = run(ENTRY_POINTS[entry], **SECRETS)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["config.settings.production", "False"]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_an_entry_point_without_settings_or_a_secret_refuses_to_start(entry, missing):
    done = run(ENTRY_POINTS[entry], **{name: value for name, value in SECRETS.items() if name != missing})

    assert done.returncode != 0
    assert f"{missing} must be set" in done.stderr


def test_a_bad_host_gets_no_debug_page_from_the_web_entry_point():
    code = (
        "import config.wsgi, django.test; "
        "r = django.test.Client(HTTP_HOST='evil.example').get('/healthz'); "
        "print(r.status_code, b'DEBUG' in r.content, b'SECRET' in r.content)"
    )
    done = run(code, **SECRETS)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["400", "False", "False"]

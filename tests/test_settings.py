"""Settings read from the environment: a malformed value stops start-up with a message naming the
variable, rather than passing start-up and failing every request that reaches it."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_SECRETS = {"DJANGO_SECRET_KEY": "a-production-secret-key-of-32-characters", "PUBLIC_ID_KEY": "x" * 16}
SHOW_POOL = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'].get('pool'))"


def load_base_settings(monkeypatch, **env: str) -> dict:  # type: ignore[no-untyped-def]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "config" / "settings" / "base.py"))


def settings_process(module: str, **env: str) -> subprocess.CompletedProcess:
    """A process that loads the settings `module` with `env` and prints its pool's options."""
    return subprocess.run(
        [sys.executable, "-c", SHOW_POOL],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": module, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- REDIS_URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/-1",
        "rediss://cache.internal:6380/0/extra",
        "unix:///run/redis.sock?db=first",
        "http://127.0.0.1:6379/0",
    ],
)
def test_a_malformed_redis_url_stops_start_up_naming_it(monkeypatch, value):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        load_base_settings(monkeypatch, REDIS_URL=value)


@pytest.mark.parametrize(
    "value",
    [
        "redis://127.0.0.1:6379/3",
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1/",
        "rediss://:a-password@cache.internal:6380/12",
        "redis://[::1]:6379/0",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_a_well_formed_redis_url_is_the_cache_and_the_broker(monkeypatch, value):
    loaded = load_base_settings(monkeypatch, REDIS_URL=value)
    assert loaded["REDIS_URL"] == loaded["CELERY_BROKER_URL"] == loaded["CACHES"]["default"]["LOCATION"] == value


def test_a_redis_url_refused_does_not_echo_its_password(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL") as refused:
        load_base_settings(monkeypatch, REDIS_URL="redis://:hunter2-secret@127.0.0.1:port/0")
    assert "hunter2" not in str(refused.value)


def test_the_process_refuses_to_start_with_a_redis_port_that_is_not_a_number():
    done = settings_process("config.settings.local", REDIS_URL="redis://127.0.0.1:notaport/0")
    assert done.returncode != 0
    assert "REDIS_URL is not a valid Redis URL" in done.stderr and "notaport" in done.stderr, done.stderr[-500:]


# --- the database pool ------------------------------------------------------------------------


def test_a_pool_smaller_than_its_minimum_stops_start_up_naming_both_sizes():
    sizes = {"DB_POOL": "true", "DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "2"}
    done = settings_process("config.settings.production", **PRODUCTION_SECRETS, **sizes)
    assert done.returncode != 0
    assert "DB_POOL_MAX_SIZE (2) must be at least DB_POOL_MIN_SIZE (5)" in done.stderr, done.stderr[-500:]


def test_a_pool_of_fixed_size_is_accepted():
    sizes = {"DB_POOL": "true", "DB_POOL_MIN_SIZE": "3", "DB_POOL_MAX_SIZE": "3"}
    done = settings_process("config.settings.production", **PRODUCTION_SECRETS, **sizes)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "{'min_size': 3, 'max_size': 3, 'timeout': 1}"


# --- LOG_LEVEL --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["loud", "10", "INFO,DEBUG", ""])
def test_a_log_level_that_is_no_level_name_stops_start_up_naming_it(monkeypatch, value):
    with pytest.raises(ImproperlyConfigured, match="LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"):
        load_base_settings(monkeypatch, LOG_LEVEL=value)


@pytest.mark.parametrize(("value", "level"), [("warning", "WARNING"), (" DEBUG ", "DEBUG"), ("Error", "ERROR")])
def test_a_log_level_name_is_read_in_any_case(monkeypatch, value, level):
    assert load_base_settings(monkeypatch, LOG_LEVEL=value)["LOGGING"]["root"]["level"] == level

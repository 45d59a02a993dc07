"""The test suite: real PostgreSQL and real Redis, as CI provides them.

Each pytest-xdist worker gets its own Redis database (and pytest-django gives it its own
PostgreSQL database), so workers never clear each other's cache.
"""

from __future__ import annotations

import os

_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_worker_index = int(_worker[2:]) if _worker[2:].isdigit() else 0
_redis_db = int(os.environ.get("TEST_REDIS_DB", "15")) - _worker_index

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing")
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_redis_db}")

from .base import *  # noqa: E402,F403

SECRET_KEY = "test-secret-key-for-the-suite-only"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Most tests start from an account with its free credits; tests of email verification (and of the
# waitlist) turn these on themselves. The defaults (true, false) are tested in tests/waitlist.
EMAIL_VERIFICATION_REQUIRED = False
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# The per-account spend limit is tested where it is on (tests/billing/test_quotas.py); elsewhere
# tests spend as fast as they like.
RATE_LIMIT_ACCOUNT_PER_MINUTE = 0

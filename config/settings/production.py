"""Production: every secret comes from the environment; nothing is defaulted."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES, SECRET_KEY, env_bool, env_int

if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to at least 32 characters in production")
# The local default key is in this repository: ids keyed by it could be turned back into row ids.
if not os.environ.get("PUBLIC_ID_KEY", "").strip():
    raise ImproperlyConfigured("PUBLIC_ID_KEY must be set (16+ characters, once per deployment) in production")

SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only: plain HTTP is redirected and browsers are told to use HTTPS for a year. Behind a
# TLS-terminating proxy that sets X-Forwarded-Proto (above), keep both; DJANGO_SSL_REDIRECT=false
# where the proxy redirects itself, or on a plain-HTTP loopback such as the benchmarks'. The
# probes and /metrics answer over plain HTTP, as a load balancer or a scraper calls them.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600, minimum=0, maximum=2 * 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is a commitment for the whole domain that is slow to undo: an operator's choice, so
# its reminder (security.W021) is silenced until it is made.
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# A connection pool per web worker (psycopg_pool through Django): a request takes a connection
# that the pool keeps healthy, with no per-request health-check query. config/gunicorn.py turns
# it on for the web server; Celery workers keep plain persistent connections (a pool's threads
# must not cross the prefork worker's fork).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_POOL", False):
    _pool_min_size = env_int("DB_POOL_MIN_SIZE", 1, minimum=0, maximum=100)
    _pool_max_size = env_int("DB_POOL_MAX_SIZE", 2, minimum=1, maximum=100)
    # psycopg_pool refuses a smaller maximum only when the first request opens the pool.
    if _pool_max_size < _pool_min_size:
        raise ImproperlyConfigured(
            f"DB_POOL_MAX_SIZE ({_pool_max_size}) must be at least DB_POOL_MIN_SIZE ({_pool_min_size})"
        )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"]["OPTIONS"],
        "pool": {
            "min_size": _pool_min_size,
            "max_size": _pool_max_size,
            # A sync worker serves one request at a time, so a request waits for a connection only
            # when PostgreSQL is unreachable: it is then answered 503 within about a second.
            "timeout": env_int("DB_POOL_TIMEOUT_SECONDS", 1, minimum=1, maximum=600),
        },
    }

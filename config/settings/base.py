"""Settings shared by every environment.

Every value that differs between machines is read from the environment through one reader
(django-environ). A malformed value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.connection import parse_url as redis_url_parse

from config import localdb

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean that must be spelled true/false; anything else is refused."""
    raw = env.str(name, default="true" if default else "false").strip().lower()
    if raw not in ("true", "false"):
        raise ImproperlyConfigured(f"{name} must be 'true' or 'false', got {raw!r}")
    return raw == "true"


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.str(name, default=str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
# Keys the permutation that turns row ids into public ids (grt_, le_, usr_, key_: accounts/ids.py).
# Set it once per deployment: changing it renames every such id (and voids open cursors).
PUBLIC_ID_KEY = env.str("PUBLIC_ID_KEY", default="local-only public id key").strip()
if len(PUBLIC_ID_KEY) < 16:
    raise ImproperlyConfigured("PUBLIC_ID_KEY must be at least 16 characters")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "pgtrigger",
    "accounts",
    "billing",
    "waitlist",
    "console",
    "notifications",
    "axes",  # login lockouts (django-axes): see "Logins" below
]

MIDDLEWARE = [
    "config.metrics.MetricsMiddleware",  # outermost: counts and times every answer
    # The headers every answer carries, the error pages below included.
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Error answers a browser on the site reads as the site's own HTML pages; JSON on API paths.
    "config.site_errors.SiteErrorPagesMiddleware",
    # Static files (the docs' Swagger UI and ReDoc, the admin's) from the process itself, gunicorn too.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.errors.RequestBodyLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "axes.middleware.AxesMiddleware",  # answers a locked-out login (accounts.throttling.login_locked_out)
]

ROOT_URLCONF = "config.urls"
# The end users' pages (accounts/web.py, billing/web.py) log in with a Django session.
LOGIN_URL = "web-login"
LOGIN_REDIRECT_URL = "web-billing"
LOGOUT_REDIRECT_URL = "web-login"
WSGI_APPLICATION = "config.wsgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# PostgreSQL is the only database. Unset, DATABASE_URL names the embedded server `make run`
# starts (config/devserver.py): database `billing`, user `postgres`, over the Unix socket in its
# data directory var/postgres (BILLING_VAR_DIR moves var/; see config/localdb.py), so a
# `manage.py` command in another terminal reaches the same database with no variable set.
VAR_DIR = localdb.var_dir()
DATABASE_URL = env.str("DATABASE_URL", default="").strip() or localdb.database_url(VAR_DIR)
_scheme, _sep, _ = DATABASE_URL.partition("://")
if not _sep or _scheme.lower() not in ("postgres", "postgresql"):
    raise ImproperlyConfigured(
        "DATABASE_URL must be a postgres:// or postgresql:// URL (PostgreSQL is the only database), "
        f"got {f'{_scheme}://...' if _sep else 'no scheme'}"
    )
try:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
except Exception as exc:  # django-environ raises several types for a bad URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
DATABASES["default"].setdefault("CONN_MAX_AGE", env_int("DB_CONN_MAX_AGE", 60, minimum=0, maximum=3600))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Parameters bound by the server, and statements a connection runs repeatedly prepared
# (from the DB_PREPARE_THRESHOLD-th run): the spend path's statements are then parsed and
# planned once per connection, not per request. 0 turns preparing off (for a pooler such as
# PgBouncer in transaction mode). The URL's query parameters (`host=` of a socket directory,
# `sslmode=`, ...) are kept as connection options.
_prepare_threshold = env_int("DB_PREPARE_THRESHOLD", 2, minimum=0, maximum=1000)
DATABASES["default"]["OPTIONS"] = {
    **DATABASES["default"].get("OPTIONS", {}),
    "server_side_binding": True,
    "prepare_threshold": _prepare_threshold or None,
    # A server that does not answer (a lost host, not a refused port) fails the connection after
    # this long (psycopg's minimum is 2), rather than holding the request.
    "connect_timeout": env_int("DB_CONNECT_TIMEOUT_SECONDS", 2, minimum=2, maximum=60),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery -------------------------------------------------------------------


def env_redis_url(name: str) -> str:
    """A Redis URL redis-py and Celery can open, or empty. redis-py reads it only when the first
    request reaches the cache (a port that is not a number fails every request then), and it
    reads a database that is not a number as 0: both are refused here."""
    raw = env.str(name, default="")
    if not raw:
        return raw
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"{name} must start with redis://, rediss:// or unix://")
    try:
        redis_url_parse(raw)  # the host, the port and the query's options, as redis-py reads them
    except ValueError as exc:  # the message names the part, never the password
        raise ImproperlyConfigured(f"{name} is not a valid Redis URL: {exc}") from None
    database = "" if raw.startswith("unix://") else urlsplit(raw).path.strip("/")  # unix://: ?db=N
    if database and not re.fullmatch(r"[0-9]+", database):
        raise ImproperlyConfigured(f"{name} must name its database by number (redis://host:port/0), got {database!r}")
    return raw


REDIS_URL = env_redis_url("REDIS_URL")

if REDIS_URL:
    # A Redis that hangs, rather than refusing connections, fails a request after a second (503
    # service_unavailable) instead of holding a web worker.
    CACHES = {
        "default": {
            "BACKEND": "config.cache.ReusedClientRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_DATA_DIR = VAR_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
else:
    # Without Redis the worker and beat share a broker on the local file system, so the
    # embedded setup needs nothing but Python.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DATA_DIR / "queue"),
        "data_folder_out": str(CELERY_DATA_DIR / "queue"),
        "processed_folder": str(CELERY_DATA_DIR / "processed"),
        "control_folder": str(CELERY_DATA_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Time -----------------------------------------------------------------------------------
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

STATIC_URL = "static/"
# WhiteNoise serves the apps' static directories as they are: no collectstatic step to forget,
# and so no collected copy (STATIC_ROOT) for it to read, or to warn about in every process when
# the directory is missing.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True

# --- Request limits -------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
# POST /api/v1/debits/batch carries up to 1,000 debits: its own body limit.
BATCH_MAX_BODY_BYTES = env_int("BATCH_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=64 * 1024, maximum=16 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerAuthentication",
        "accounts.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.PrincipalRateThrottle"],
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "accounts.schema.ApiAutoSchema",
    "UNAUTHENTICATED_USER": None,
    # X-Forwarded-For is read only behind this many trusted proxies (accounts.ratelimit.client_address).
    "NUM_PROXIES": env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10),
}

# Requests per minute for each kind of caller; 0 switches the limit off.
RATE_LIMITS = {
    "service": env_int("RATE_LIMIT_SERVICE_PER_MINUTE", 60000, minimum=0, maximum=10**9),
    "user": env_int("RATE_LIMIT_USER_PER_MINUTE", 600, minimum=0, maximum=10**9),
    "anon": env_int("RATE_LIMIT_ANON_PER_MINUTE", 60, minimum=0, maximum=10**9),
    # Joining the waitlist (the API and the page), per client address.
    "waitlist": env_int("RATE_LIMIT_WAITLIST_PER_MINUTE", 10, minimum=0, maximum=10**9),
    # Verification emails a logged-in user may have sent again, per user.
    "verification_email": env_int("RATE_LIMIT_VERIFICATION_EMAIL_PER_MINUTE", 3, minimum=0, maximum=10**9),
}
# --- Logins (django-axes) --------------------------------------------------------------------
# Failed logins, through the API's token route, the web login and the admin's, are counted per
# account and per client address in the database; past the limit, logins of that account or from
# that address are refused (429) for the cool-off, even with the right password.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=24 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A login that succeeds clears its account's failures only (accounts.throttling.login_succeeded):
# django-axes' own reset clears the address's too, which an address trying other people's
# passwords could use by logging into an account of its own between tries.
AXES_RESET_ON_SUCCESS = False
AXES_USERNAME_FORM_FIELD = "username"  # the login forms' field and authenticate()'s keyword
AXES_USERNAME_CALLABLE = "accounts.throttling.login_username"
AXES_CLIENT_IP_CALLABLE = "accounts.ratelimit.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.throttling.login_locked_out"
AXES_VERBOSE = False

# Spends (debits, holds, batch items) per account, counted on the locked account row by the spend
# functions (billing/sql/billing_spend_quota.sql): a token bucket of BURST spends refilled at
# PER_MINUTE a minute (0 switches it off), and the credits an account may spend in a UTC day
# (0: no cap). Operators override each per account in the admin.
RATE_LIMIT_ACCOUNT_PER_MINUTE = env_int("RATE_LIMIT_ACCOUNT_PER_MINUTE", 50, minimum=0, maximum=10**6)
RATE_LIMIT_ACCOUNT_BURST = env_int("RATE_LIMIT_ACCOUNT_BURST", 10, minimum=1, maximum=10**6)
DAILY_CAP_CREDITS = env_int("DAILY_CAP_CREDITS", 0, minimum=0, maximum=10**15)

# Redis unreachable: limits let calls through uncounted (false, PostgreSQL being the source of
# truth) or refuse them with 503 service_unavailable (true).
RATE_LIMIT_FAIL_CLOSED = env_bool("RATE_LIMIT_FAIL_CLOSED", False)
# How long a service key checked against the database is trusted from the shared cache: a key
# revoked while Redis cannot be told is refused everywhere within this many seconds.
SERVICE_KEY_CACHE_SECONDS = env_int("SERVICE_KEY_CACHE_SECONDS", 10, minimum=0, maximum=300)
# Personal tokens (POST /auth/token) stop working this many days after they were made.
USER_TOKEN_LIFETIME_DAYS = env_int("USER_TOKEN_LIFETIME_DAYS", 30, minimum=1, maximum=3650)

SPECTACULAR_SETTINGS = {
    "TITLE": "Credit billing API",
    "DESCRIPTION": (
        "Credits, holds and debits for the image-generation service. JSON in and out, times in UTC "
        "(ISO 8601), every object named by a prefixed public id. Errors are "
        '`{"error": {"code", "message", ...details}}`; each operation lists its codes. A method a path '
        "does not list answers 405 `method_not_allowed` in that shape."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "accounts.schema.document_status_headers",
    ],
    # Swagger UI and ReDoc from drf-spectacular-sidecar's files: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; empty turns it off (403).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="").strip()
if METRICS_TOKEN and (len(METRICS_TOKEN) < 16 or not METRICS_TOKEN.isascii() or not METRICS_TOKEN.isprintable()):
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 printable ASCII characters")
if any(c.isspace() for c in METRICS_TOKEN):
    raise ImproperlyConfigured("METRICS_TOKEN must not contain spaces")
# How long /metrics reuses the ledger gauges it read (shared by all processes through the cache).
METRICS_STATE_SECONDS = env_int("METRICS_STATE_SECONDS", 30, minimum=0, maximum=3600)

# --- Billing policy -------------------------------------------------------------------------
FREE_CREDITS_FIRST_PERIOD = env_int("FREE_CREDITS_FIRST_PERIOD", 50, minimum=0, maximum=10**6)
FREE_CREDITS_PER_PERIOD = env_int("FREE_CREDITS_PER_PERIOD", 15, minimum=0, maximum=10**6)
# Signups on a later day of the month anchor their periods on this day.
FREE_PERIOD_LATEST_ANCHOR_DAY = env_int("FREE_PERIOD_LATEST_ANCHOR_DAY", 28, minimum=1, maximum=28)
HOLD_DEFAULT_EXPIRES_IN_SECONDS = 900
HOLD_MAX_EXPIRES_IN_SECONDS = 86400
# A job run (refill, expiry, hold timeouts) with no chunk done for this long counts as cut
# short; the next start abandons it and redoes what it left.
JOB_STALE_AFTER_SECONDS = env_int("JOB_STALE_AFTER_SECONDS", 600, minimum=0, maximum=7 * 86400)
# The refill chunk skips the foreign-key checks its own statement makes needless, where the
# database role may (billing/services/job_sql.py says when and why); false keeps every check.
REFILL_SKIP_FOREIGN_KEY_CHECKS = env_bool("REFILL_SKIP_FOREIGN_KEY_CHECKS", True)
IDEMPOTENCY_KEY_RETENTION_HOURS = env_int("IDEMPOTENCY_KEY_RETENTION_HOURS", 48, minimum=24, maximum=24 * 90)
# The most credits a `support` operator may grant in one grant (console/roles.py).
SUPPORT_GRANT_LIMIT_CREDITS = env_int("SUPPORT_GRANT_LIMIT_CREDITS", 500, minimum=0, maximum=10**9)

# --- Signup, waitlist, email ----------------------------------------------------------------
# A new account's first free credits wait until its email is verified (the signed link signup
# sends); false grants them at signup.
EMAIL_VERIFICATION_REQUIRED = env_bool("EMAIL_VERIFICATION_REQUIRED", True)
EMAIL_VERIFICATION_MAX_AGE_HOURS = env_int("EMAIL_VERIFICATION_MAX_AGE_HOURS", 72, minimum=1, maximum=24 * 90)
# While on, signup needs a one-time invitation; a weekly job invites the oldest waiting entries,
# at most the quota (operators edit it in the admin; this seeds it).
WAITLIST_ENABLED = env_bool("WAITLIST_ENABLED", False)
WAITLIST_WEEKLY_QUOTA = env_int("WAITLIST_WEEKLY_QUOTA", 1000, minimum=0, maximum=10**7)
WAITLIST_INVITATION_DAYS = env_int("WAITLIST_INVITATION_DAYS", 14, minimum=1, maximum=365)
# Links in emails (invitations, email verification) start with this.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").strip().rstrip("/")
if not SITE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"SITE_URL must be an http:// or https:// URL, got {SITE_URL!r}")
# Django's email framework: SMTP by default (EMAIL_HOST, EMAIL_PORT, ...); `make run` prints
# mail on the console (config/settings/local.py).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Credits <no-reply@localhost>")

# --- Stripe ---------------------------------------------------------------------------------
# Without STRIPE_SECRET_KEY the app runs and buying answers 503 payments_unavailable; a key
# that is set but malformed stops start-up, naming the variable.


def env_secret(name: str, prefixes: tuple[str, ...]) -> str:
    raw = env.str(name, default="").strip()
    if raw and (not raw.startswith(prefixes) or len(raw) < 12 or not raw.isascii() or any(c.isspace() for c in raw)):
        raise ImproperlyConfigured(f"{name} must start with {' or '.join(prefixes)} (got a value that does not)")
    return raw


def env_url(name: str, default: str) -> str:
    raw = env.str(name, default=default).strip()
    if raw and not raw.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw


STRIPE_SECRET_KEY = env_secret("STRIPE_SECRET_KEY", ("sk_", "rk_"))
STRIPE_WEBHOOK_SECRET = env_secret("STRIPE_WEBHOOK_SECRET", ("whsec_",))
# A local Stripe API server (localstripe) for development and tests; empty means Stripe itself.
STRIPE_API_BASE = env_url("STRIPE_API_BASE", "").rstrip("/")
# Signatures older than this are refused (Stripe's own default tolerance).
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1, maximum=3600)
# Where Checkout sends the buyer back: by default this site's own pages (SITE_URL), so a
# deployment that sets SITE_URL alone does not send buyers to the loopback address.
# {PURCHASE_ID} becomes our purchase id (pur_...); Stripe itself fills in {CHECKOUT_SESSION_ID}.
CHECKOUT_SUCCESS_URL = env_url("CHECKOUT_SUCCESS_URL", f"{SITE_URL}/billing/success?purchase={{PURCHASE_ID}}")
CHECKOUT_CANCEL_URL = env_url("CHECKOUT_CANCEL_URL", f"{SITE_URL}/billing/cancel?purchase={{PURCHASE_ID}}")
# Stripe retries a webhook for up to three days: reconciliation looks that far back. No window,
# this one or `reconcile_stripe --hours`, reaches back more than 30 days.
STRIPE_RECONCILE_MAX_WINDOW_HOURS = 24 * 30
STRIPE_RECONCILE_WINDOW_HOURS = env_int(
    "STRIPE_RECONCILE_WINDOW_HOURS", 72, minimum=1, maximum=STRIPE_RECONCILE_MAX_WINDOW_HOURS
)
PURCHASE_MAX_QUANTITY = 20

# --- Notifications --------------------------------------------------------------------------
# balance.low fires when available credits fall below this (users may set their own), and again
# only after balance.recovered.
LOW_BALANCE_THRESHOLD_CREDITS = env_int("LOW_BALANCE_THRESHOLD_CREDITS", 10, minimum=0, maximum=10**9)
# credits.expiring: a lot with credits left that expires within this many days.
CREDITS_EXPIRING_DAYS = env_int("CREDITS_EXPIRING_DAYS", 3, minimum=1, maximum=60)
# Outbound webhooks: a failing delivery is retried with exponential backoff for this long.
WEBHOOK_RETRY_HOURS = env_int("WEBHOOK_RETRY_HOURS", 72, minimum=1, maximum=24 * 30)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1, maximum=60)
# Endpoint URLs must be https:// on a public address; these let tests and development use a
# receiver on http://127.0.0.1.
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", False)
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", False)
# Events (with their deliveries and attempts) are kept this long once done (nightly purge).
NOTIFICATION_RETENTION_DAYS = env_int("NOTIFICATION_RETENTION_DAYS", 90, minimum=7, maximum=3650)
# Auto-recharge switches itself off after this many failed charges in a row.
AUTO_RECHARGE_MAX_FAILURES = env_int("AUTO_RECHARGE_MAX_FAILURES", 3, minimum=1, maximum=20)

# The root logger's level: a level name of Python's logging, in any case.
_log_level = env.str("LOG_LEVEL", default="INFO").strip()
if _log_level.upper() not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {_log_level!r}")
LOG_LEVEL = _log_level.upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

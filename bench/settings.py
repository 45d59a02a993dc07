"""The spend benchmark's server settings: production, plus the bare ceiling endpoints.

Only ROOT_URLCONF differs from config.settings.production, so the bare endpoints and the API are
served by the same workers, middleware, database connections and cache; and the redirect to
HTTPS is off, since the benchmark talks plain HTTP on the loopback (DJANGO_SSL_REDIRECT).
"""

from config.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
SECURE_SSL_REDIRECT = False

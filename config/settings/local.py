"""Development and `make run`: the embedded defaults."""

from __future__ import annotations

from .base import *  # noqa: F403
from .base import env

DEBUG = True
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="local-development-only-secret-key-not-for-production")
# Invitations and verification links are printed by the process that sends them.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

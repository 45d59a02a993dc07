"""Celery application: configured from Django settings under the CELERY_ namespace."""

from __future__ import annotations

import os

from celery import Celery

# Unset, the settings are production's (which refuse to start without their secrets), never the
# local ones with DEBUG on: config/__init__.py imports this module before config/wsgi.py runs, so
# this default is also the web server's. `make run` and manage.py name the local settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from __future__ import annotations

import pytest

from config.celery import app as celery_app


@pytest.fixture
def eager_tasks():
    """Celery tasks queued during the test run on the spot (mail lands in mail.outbox)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def waitlist_on(settings):
    settings.WAITLIST_ENABLED = True
    return settings

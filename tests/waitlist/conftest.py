from __future__ import annotations

import pytest


@pytest.fixture
def waitlist_on(settings):
    settings.WAITLIST_ENABLED = True
    return settings

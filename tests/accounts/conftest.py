from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.private_servers import PrivateRedis


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, to stop or hang (the shared one stays up)."""
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()

"""Running work on several threads at once against the real database, for the tests that race
requests or services (each thread has its own database connection, closed when it is done)."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connection

T = TypeVar("T")

# Generous (a loaded CI box is slow), but under pytest-timeout's 300 s: a hang that PostgreSQL's
# deadlock detector does not break shows up as threads still alive at this deadline.
JOIN_TIMEOUT_SECONDS = 240


def run_concurrently(threads: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..threads-1) on that many threads started together; re-raise any failure."""
    barrier = threading.Barrier(threads, timeout=30)
    results: list[Any] = [None] * threads
    failures: list[str] = []

    def target(index: int) -> None:
        try:
            connection.ensure_connection()  # connect before the barrier: requests then overlap
            barrier.wait()
            results[index] = work(index)
        except BaseException:
            failures.append(f"thread {index}:\n{traceback.format_exc()}")
            barrier.abort()
        finally:
            connection.close()

    pool = [threading.Thread(target=target, args=(i,), name=f"worker-{i}", daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    for thread in pool:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in pool if thread.is_alive()]
    assert not stuck, f"threads still running after {JOIN_TIMEOUT_SECONDS}s (deadlock?): {stuck}"
    assert not failures, "\n".join(failures)
    return results


def wait_until_another_backend_waits_on_a_lock(timeout: float = 10.0) -> None:
    """Poll, on this thread's connection, until another backend of this database is blocked on a
    lock: to force an interleaving, a thread holding a lock waits here for the other side to queue
    behind it before it goes on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    raise AssertionError(f"no other backend queued behind this one's locks within {timeout}s")

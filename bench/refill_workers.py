"""The refill benchmark's Celery workers, and the refill timed through them.

One `celery -A config worker` with prefork children, started and stopped by this process (by
pid, never by name), and `manage.py run_job refill --queue` timed until its run completes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any

from common import BIN, ROOT, checkpoint, sql
from procs import BackendCpu, proc_children, proc_cpu_seconds, proc_memory
from refill_raw import wal_position, wal_since

WORKER_NAME = "bench-refill@" + socket.gethostname()


@dataclass
class Workers:
    """One `celery -A config worker` with prefork children, started and stopped by this process."""

    concurrency: int
    log_path: Path
    process: subprocess.Popen | None = None
    known_children: set[int] = field(default_factory=set)

    def start(self) -> None:
        from config.celery import app

        command = [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={self.concurrency}",
            "--pool=prefork",
            "-n",
            WORKER_NAME,
            f"--logfile={self.log_path}",
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}; see {self.log_path}")
            if app.control.ping(destination=[WORKER_NAME], timeout=0.5) and len(self.children()) >= self.concurrency:
                return
        raise RuntimeError(f"the worker did not answer a ping within 90 s; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        assert self.process is not None
        pids = proc_children(self.process.pid)
        self.known_children.update(pids)
        return pids

    def memory(self) -> dict[str, Any]:
        """Peak (VmHWM) and current (VmRSS) resident memory of the main process and each child, KiB."""
        assert self.process is not None
        return {
            "parent": proc_memory(self.process.pid),
            "children": [proc_memory(pid) for pid in self.children()],
        }

    def cpu_seconds(self) -> float:
        assert self.process is not None
        pids = [self.process.pid, *self.children()]
        return sum(proc_cpu_seconds(pid) or 0.0 for pid in pids)

    def stop(self) -> None:
        """Warm shutdown by pid; a worker that will not stop, and its children, are killed by pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.children()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in self.known_children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def running_workers(concurrency: int, log_path: Path) -> Iterator[Workers]:
    workers = Workers(concurrency=concurrency, log_path=log_path)
    try:
        workers.start()
        yield workers
    finally:
        workers.stop()


def time_refill(workers: Workers, as_of: datetime, size: int) -> dict[str, Any]:
    """`run_job refill --queue` (job start and fan-out), then wait for the run to complete."""
    from django.core.management import call_command
    from django.db import connection

    from billing.models import JobRun

    checkpoint()
    db_cpu = BackendCpu(connection.settings_dict["NAME"], sql("SELECT pg_backend_pid()")[0][0])
    db_cpu.start()
    load, worker_cpu, wal = os.getloadavg()[0], workers.cpu_seconds(), wal_position()
    started = time.perf_counter()
    call_command(
        "run_job", "refill", "--queue", "--as-of", as_of.isoformat(), "--chunk-accounts", str(size), stdout=StringIO()
    )
    run = JobRun.objects.filter(job=JobRun.Job.REFILL).latest("id")
    _wait_for_run(workers, run.pk, db_cpu)
    wall = time.perf_counter() - started
    db_cpu.sample()
    run.refresh_from_db()
    wal_bytes = wal_since(wal)
    assert run.finished_at is not None
    return {
        "run_id": run.pk,
        "seconds": wall,
        "jobrun_seconds": (run.finished_at - run.started_at).total_seconds(),
        "db_cpu_seconds": db_cpu.seconds(),
        "worker_cpu_seconds": workers.cpu_seconds() - worker_cpu,
        "wal_bytes": wal_bytes,
        "loadavg_before": load,
        "chunks": run.chunks_total,
        "grants": run.rows_done,
        "credits": run.credits_moved,
        "retries": sum(run.chunks.values_list("failures", flat=True)),
    }


def _wait_for_run(workers: Workers, run_id: int, db_cpu: BackendCpu) -> None:
    """Poll every 10 ms until the run completes, sampling the backends' CPU; fail on a failed
    chunk or a dead worker."""
    from django.db import connection

    from billing.models import JobChunk, JobRun

    # One plain query per poll (no ORM instance refresh): the poll shares the CPUs with the run.
    poll = (
        "SELECT r.status, EXISTS (SELECT 1 FROM billing_jobchunk c WHERE c.run_id = r.id AND c.status = %(failed)s)"
        " FROM billing_jobrun r WHERE r.id = %(run)s"
    )
    with connection.cursor() as cursor:
        while True:
            cursor.execute(poll, {"run": run_id, "failed": JobChunk.Status.FAILED})
            status, failed = cursor.fetchone()
            if status == JobRun.Status.COMPLETED:
                return
            if not workers.alive():
                raise RuntimeError(f"the worker died during run {run_id}; see {workers.log_path}")
            if failed:
                raise RuntimeError(f"run {run_id} has failed chunks; see JobChunk.last_error")
            db_cpu.sample()
            time.sleep(0.01)

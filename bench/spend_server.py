"""The spend benchmark's web server, and the CPU each part of the machine spends under load.

gunicorn runs with config/gunicorn.py and the production settings, as production runs it; its
workers' memory is sampled while it runs. The server is started and stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import BENCH_PUBLIC_ID_KEY, BENCH_SECRET_KEY, BIN, ROOT
from procs import pids_named, proc_children, proc_cpu_seconds, proc_memory

SERVER_SETTINGS = "bench.settings"


class Server:
    """gunicorn with config/gunicorn.py, as production runs it, on the bench database."""

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib: dict[int, int] = {}
        self._sampling = False
        self._sampler: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=SERVER_SETTINGS,
            DATABASE_URL=f"{self.args.pg_url}/{self.args.database}",
            REDIS_URL=self.args.redis_url,
            DJANGO_SECRET_KEY=BENCH_SECRET_KEY,
            PUBLIC_ID_KEY=BENCH_PUBLIC_ID_KEY,
            PORT=str(self.args.port),
            LOG_LEVEL="WARNING",
            GUNICORN_LOG_LEVEL="warning",
            # The limiter runs on every request, with a budget the load cannot exhaust.
            RATE_LIMIT_SERVICE_PER_MINUTE=str(10**9),
        )
        if self.args.workers:
            env["WEB_CONCURRENCY"] = str(self.args.workers)
        return env

    def start(self) -> None:
        command = [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "config.wsgi"]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            if self._ready():
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"gunicorn did not become ready; see {self.log_path}")
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _ready(self) -> bool:
        """/readyz answers 200 and every worker asked for has started."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return response.status == 200 and len(self.workers()) >= (self.args.workers or 1)
        except OSError:
            return False

    def workers(self) -> list[int]:
        return proc_children(self.process.pid) if self.process else []

    def _sample(self) -> None:
        while self._sampling:
            for pid in self.workers():
                try:
                    memory = proc_memory(pid)
                except OSError:
                    continue
                self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0), memory["peak_kib"], memory["rss_kib"])
            time.sleep(0.25)

    def stop(self) -> None:
        self._sampling = False
        if self._sampler:
            self._sampler.join()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_server(args: argparse.Namespace, log_path: Path) -> Iterator[Server]:
    server = Server(args, log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _cpu_seconds(pid: int) -> float:
    return proc_cpu_seconds(pid) or 0.0


class CpuMeter:
    """CPU seconds spent by the web workers, PostgreSQL, Redis and the load generator over a step.

    PostgreSQL is the backends connected to the bench database (not the server's background
    processes, nor other databases' work). Backends that exit during the step are not counted
    (pgbench connects its own), so that figure is a lower bound for pgbench.
    """

    def __init__(self, server: Server, database: str) -> None:
        self.server = server
        self.database = database

    def snapshot(self) -> dict[str, Any]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "web": {pid: _cpu_seconds(pid) for pid in self.server.workers()},
            "postgres": {pid: _cpu_seconds(pid) for pid in pids_named("postgres", cmdline_has=f" {self.database} ")},
            "redis": {pid: _cpu_seconds(pid) for pid in pids_named("redis-server")},
            "load": children.ru_utime + children.ru_stime,
        }

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        spent = {}
        for part in ("web", "postgres", "redis"):
            spent[part] = sum(after[part][pid] - before[part].get(pid, 0.0) for pid in after[part])
        spent["load"] = after["load"] - before["load"]
        return spent

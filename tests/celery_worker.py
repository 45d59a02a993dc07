"""A real `celery -A config worker` process for the tests that need one (the Celery integration
tests and the job fault tests): started with the environment given, its database sessions named
by PGAPPNAME, in a process group of its own so that kill() reaches its pool too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELERY = Path(sys.executable).with_name("celery")
READY_SECONDS = 60  # a busy 2-core machine starts a prefork pool slowly


@dataclass
class CeleryWorker:
    process: subprocess.Popen
    log: Path
    app_name: str

    @classmethod
    def start(cls, env: dict[str, str], log: Path, *, name: str, concurrency: int = 1) -> CeleryWorker:
        """Start it and wait until it says it is ready (its log's tail in the failure if not)."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(CELERY), "-A", "config", "worker", "--loglevel=INFO", "--pool=prefork"]
                + [f"--concurrency={concurrency}", "-Q", "celery", "-n", f"{name}@%h"]
                + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT,
                env={**env, "PGAPPNAME": name, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = cls(process, log, name)
        deadline = time.monotonic() + READY_SECONDS
        while " ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                worker.kill()
                raise AssertionError(f"the worker did not get ready ({process.returncode})\n{worker.tail()}")
            time.sleep(0.1)
        return worker

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "--- worker log ---\n" + "\n".join(text.splitlines()[-lines:])

    def received(self, task_name: str) -> bool:
        return f"Task {task_name}[" in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the main process and its pool children (its own process group)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

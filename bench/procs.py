"""Processes on this machine, read from /proc: CPU time, memory, children, and the PostgreSQL
backends serving a database (PostgreSQL, Redis and the servers under test all run here)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces): state first."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process on this machine; None if it is not here."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def parent_pid(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[1])
    except OSError:
        return None


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def proc_children(pid: int) -> list[int]:
    """The process's children (those its main thread forked); none if it has gone."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def proc_memory(pid: int) -> dict[str, int]:
    """Peak (VmHWM) and current (VmRSS) resident memory of a process, KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return {"pid": pid, "peak_kib": fields.get("VmHWM", 0), "rss_kib": fields.get("VmRSS", 0)}


def pids_named(name: str, *, cmdline_has: str = "") -> list[int]:
    """Every process called `name` (and whose command line holds `cmdline_has`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != name:
                    continue
                if cmdline_has and cmdline_has not in (entry / "cmdline").read_text():
                    continue
                found.append(int(entry.name))
            except OSError:
                continue
    return found


class BackendCpu:
    """CPU seconds spent by the PostgreSQL backends of the bench database other than this process's
    own (the workers' connections), found among the postmaster's children in /proc and sampled
    while a run goes on. The Celery workers open a connection per task (celery's Django fixup
    closes them around every task), so a backend's last few milliseconds between samples are
    missed: a slight undercount. Unlike the wall clock it does not grow when other work shares
    the machine, so it is the steadier number to compare. None when PostgreSQL is not local."""

    def __init__(self, database: str, own_backend: int) -> None:
        self.own = own_backend
        postmaster = parent_pid(self.own)
        self.postmaster = postmaster if postmaster and proc_name(postmaster) == "postgres" else None
        self.tag = f" {database} ".encode()
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        # Whether a backend serves the bench database does not change while it lives: its command
        # line is read until it has its process title, then only its CPU counters (a sample costs
        # little, so the sampling does not take CPU from the workers it measures).
        self.ours: dict[int, bool] = {}

    def _is_ours(self, pid: int) -> bool | None:
        if pid not in self.ours:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return None
            if not title.startswith(b"postgres: "):
                return None  # forked, not yet titled: look again next time
            self.ours[pid] = pid != self.own and self.tag in title
        return self.ours[pid]

    def _read(self) -> dict[int, float]:
        if self.postmaster is None:
            return {}
        found = {}
        children = set(proc_children(self.postmaster))
        self.ours = {pid: mine for pid, mine in self.ours.items() if pid in children}
        for pid in children:
            if self._is_ours(pid):
                cpu = proc_cpu_seconds(pid)
                if cpu is not None:
                    found[pid] = cpu
        return found

    def start(self) -> None:
        self.base = self._read()
        self.last = dict(self.base)

    def sample(self) -> None:
        self.last.update(self._read())

    def seconds(self) -> float | None:
        if self.postmaster is None:
            return None
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())

"""Gunicorn settings for production: `gunicorn -c config/gunicorn.py config.wsgi`.

Every value can be overridden from the environment (gunicorn also reads GUNICORN_CMD_ARGS).
Sync workers: each handles one request at a time with its own persistent database connection,
which is what the spend path is measured with (bench/README.md); each read from a client times
out (GUNICORN_CLIENT_TIMEOUT) and a whole request's reads end in GUNICORN_REQUEST_READ_TIMEOUT,
so a client that stops sending, or trickles, frees its worker.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile


def _int_env(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SystemExit(f"{name} must be from {minimum} to {maximum}, not {value}")
    return value


# Each worker keeps a small connection pool (config/settings/production.py, DB_POOL).
os.environ.setdefault("DB_POOL", "true")

bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{_int_env('PORT', 8000, 1, 65535)}")
workers = _int_env("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1, 1, 256)
# Sync workers whose connections time out, and gunicorn's own refusals as JSON (config/gunicorn_worker.py).
worker_class = "config.gunicorn_worker.TimedSyncWorker"
# Requests are small (64 KiB at most, 1 MiB for a batch); a stuck request is killed, not waited on.
timeout = _int_env("GUNICORN_TIMEOUT", 30, 1, 3600)
# A client's request (its headers, then its body) may pause this long between reads.
_int_env("GUNICORN_CLIENT_TIMEOUT", 5, 1, 300)
_int_env("GUNICORN_REQUEST_READ_TIMEOUT", 15, 1, 3600)
graceful_timeout = 30
keepalive = 5
# The listen queue holds the callers waiting for a free worker.
backlog = 2048
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


# Request metrics (config/metrics.py): each worker writes its figures to files in one directory,
# which /metrics adds up. A directory the environment names is used, its old files removed;
# otherwise the server makes one and removes it on exit. Set here, in the master, before any
# worker imports prometheus_client (the app is loaded in the workers, after the fork).
_made_metrics_dir: list[str] = []


def on_starting(server):  # type: ignore[no-untyped-def]
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="billing-metrics-")
        _made_metrics_dir.append(path)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    for path in _made_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)

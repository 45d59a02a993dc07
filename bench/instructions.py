"""Instructions per request in the web worker: the spend routes against their bare ceilings.

Run it with `make bench-instructions` (see bench/README.md). Throughput ratios (`make bench`)
move by 0.05-0.1 between runs on a shared machine, more than most changes to the web worker's
code are worth; these instruction counts repeat within about 2% (what is done every so many
seconds, such as the rate limiter's blocks, still follows the run's speed). For each kind of request this
calls the WSGI application in one process (bench.settings: the production settings plus the
bare endpoints, with the connection pool as gunicorn runs it) under
`valgrind --tool=callgrind`, twice: the count of a run of `--warm` + `--requests` requests minus
that of a run of `--warm` requests, divided by `--requests`. Both runs collect the garbage and
freeze what is left after the warm-up, and collect again at the end, so the counted requests
pay for their own garbage collection; the hash seed is fixed and the accounts drawn in the same
order, so the two runs differ only by the requests counted.

It counts the web worker's own instructions (Python, psycopg, libpq), not PostgreSQL's nor the
HTTP server's. It uses its own database (recreated, `--accounts` accounts, as `make bench`
prepares them) and Redis database 11.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from common import (
    BENCH_PUBLIC_ID_KEY,
    BENCH_SECRET_KEY,
    BIN,
    CALLGRIND,
    ROOT,
    add_database_options,
    check_database_name,
    check_kinds,
    collected,
    configure_django,
    flush_broker,
    log,
    print_instructions,
    require_valgrind,
)

# kind -> (method, path with {n} for an account number, body); debits go to the accounts whose
# per-account rate limit is off, so that repeated runs are never refused.
KINDS: dict[str, tuple[str, str, bytes]] = {
    "debit": ("POST", "/api/v1/accounts/acct_bench{n:015d}/debits", b'{"credits":1,"reference":"bench"}'),
    "bare_debit": ("POST", "/bench/bare/debit/{n}", b""),
    "balance": ("GET", "/api/v1/accounts/acct_bench{n:015d}/balance", b""),
    "bare_read": ("GET", "/bench/bare/balance/acct_bench{n:015d}", b""),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Instructions per request of the spend routes and their ceilings.")
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=300, help="Requests counted per kind.")
    parser.add_argument("--warm", type=int, default=50, help="Requests made before counting starts.")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Comma-separated kinds to count.")
    add_database_options(parser, database="billing_bench_instructions", redis_db=11)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # kind, in the process valgrind runs
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_kinds(parser, args.kinds, KINDS)
    check_database_name(parser, args)
    if args.requests < 1 or args.warm < 1:
        parser.error("--requests and --warm must be at least 1")
    return args


# --- the process valgrind runs ------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """`args.warm` requests of kind `args.child` through the WSGI application, then the garbage
    collected and what is left frozen (the loaded application: later full collections skip it),
    then `args.count` requests and their garbage collected. The interpreter's own exit is
    skipped: it is the same in every run, and only adds to the time valgrind takes."""
    import gc

    sys.path.insert(0, str(ROOT))
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    method, path, body = KINDS[args.child]
    rng = random.Random(1)
    nonce = f"{os.getpid():08d}"

    def call(i: int) -> None:
        n = rng.randrange(args.first, args.accounts + 1)
        environ = _environ(method, path.format(n=n), body, args.token, f"instr-{nonce}-{i:06d}")
        statuses: list[str] = []
        b"".join(app(environ, lambda status, headers, *_: statuses.append(status)))
        if not statuses[0].startswith(("200", "201")):
            raise SystemExit(f"{args.child}: {statuses[0]} for {environ['PATH_INFO']}")

    for i in range(args.warm):
        call(i)
    gc.collect()
    gc.freeze()
    for i in range(args.warm, args.warm + args.count):
        call(i)
    gc.collect()
    sys.stdout.flush()
    os._exit(0)


def _environ(method: str, path: str, body: bytes, token: str, key: str) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_IDEMPOTENCY_KEY": key,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
    }
    if body:
        environ["CONTENT_TYPE"] = "application/json"
    return environ


# --- the bench process ----------------------------------------------------------------------------


def instructions(args: argparse.Namespace, kind: str, count: int, token: str, first: int) -> int:
    """Instructions callgrind counts for a child process making `count` requests of `kind`."""
    env = dict(
        os.environ,
        PYTHONHASHSEED="0",
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=f"{args.pg_url}/{args.database}",
        REDIS_URL=args.redis_url,
        DJANGO_SECRET_KEY=BENCH_SECRET_KEY,
        PUBLIC_ID_KEY=BENCH_PUBLIC_ID_KEY,
        LOG_LEVEL="WARNING",
        RATE_LIMIT_SERVICE_PER_MINUTE=str(10**9),  # as `make bench`: counted, never refused
        # Under callgrind the code runs about 50 times slower, so what is done every so many
        # seconds comes 50 times as often per request as in production: the service key's
        # database check (every 10 s by default) is spaced as far apart as the setting allows.
        SERVICE_KEY_CACHE_SECONDS="300",
        DB_POOL="true",
    )
    command = [*CALLGRIND, str(BIN / "python")]
    command += [__file__, "--child", kind, "--count", str(count), "--token", token, "--first", str(first)]
    command += ["--warm", str(args.warm), "--accounts", str(args.accounts), "--database", args.database]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace")
    count = collected(done.stderr)
    if done.returncode != 0 or count is None:
        raise RuntimeError(f"{kind}: valgrind run failed:\n{done.stderr[-2000:]}")
    return count


def per_request(args: argparse.Namespace, kind: str, token: str, first: int) -> int:
    short, long = (instructions(args, kind, count, token, first) for count in (0, args.requests))
    return (long - short) // args.requests


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    require_valgrind("bench-instructions")
    configure_django(args)
    import spend

    log(f"preparing {args.accounts:,} accounts in {args.database}")
    prepared = spend.prepare(args, datetime.now(UTC))
    flush_broker(args.redis_url)
    first = spend.account_halves(args.accounts)[1]["first"]  # the accounts with no per-account limit
    kinds = args.kinds.split(",")
    log(f"counting {args.requests} requests of each of {', '.join(kinds)} under callgrind")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = pool.map(lambda kind: per_request(args, kind, prepared["token"], first), kinds)
        counts = dict(zip(kinds, found, strict=True))
    print_instructions("request", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())

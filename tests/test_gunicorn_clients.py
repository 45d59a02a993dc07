"""The production web server (gunicorn -c config/gunicorn.py, production settings) facing hostile
clients: half-sent and trickled bodies do not stall it, its own refusals are JSON, plain HTTP is redirected to
HTTPS (not the probes) and HTML pages carry a Content-Security-Policy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.private_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
CLIENT_TIMEOUT = 2
REQUEST_READ_TIMEOUT = 4


def exchange(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get(port: int, path: str, *extra: str) -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close", *extra]
    return exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[int]:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DJANGO_SECRET_KEY="gunicorn-clients-test-" + "k" * 40,
        PUBLIC_ID_KEY="gunicorn-clients-test-public-ids",
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing"),
        WEB_CONCURRENCY="2",
        PORT=str(port),
        GUNICORN_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT),
        GUNICORN_REQUEST_READ_TIMEOUT=str(REQUEST_READ_TIMEOUT),
        GUNICORN_LOG_LEVEL="warning",
    )
    log = tmp_path_factory.mktemp("gunicorn") / "log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", "config/gunicorn.py", "config.wsgi"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(port, "/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=30)


def half_sent_body(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email": '
    )
    return sock


def test_clients_that_stop_sending_their_bodies_do_not_stall_the_server(server):
    stalled = [half_sent_body(server) for _ in range(2)]  # one per worker
    try:
        started = time.monotonic()
        status, _, _ = get(server, "/healthz")
        took = time.monotonic() - started
        answers = []
        for sock in stalled:
            answer = sock.recv(65536)
            answers.append(answer.split(b"\r\n", 1)[0])
    finally:
        for sock in stalled:
            sock.close()
    assert status == 200
    # Within the read timeout, plus the 2 s gunicorn lingers for a client to close after the answer.
    assert took < CLIENT_TIMEOUT + 2 + 1.5, took
    # Each stalled request was answered (408, JSON) when its read timed out, not left hanging.
    assert all(line.startswith(b"HTTP/1.1 408") for line in answers), answers


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """Send the rest of half_sent_body's body a byte a second: each read gets its byte well
    within the per-read timeout, so only the whole request's deadline ends it."""
    while not stop.wait(1):
        try:
            sock.sendall(b" ")
        except OSError:  # answered and closed
            return


def test_clients_that_trickle_their_bodies_do_not_stall_the_server(server):
    stop = threading.Event()
    trickling = [half_sent_body(server) for _ in range(2)]  # one per worker
    senders = [threading.Thread(target=trickle, args=(sock, stop), daemon=True) for sock in trickling]
    for sender in senders:
        sender.start()
    try:
        started = time.monotonic()
        status, _, _ = get(server, "/healthz")
        took = time.monotonic() - started
        answers = [sock.recv(65536).split(b"\r\n", 1)[0] for sock in trickling]
    finally:
        stop.set()
        for sock in trickling:
            sock.close()
    assert status == 200
    # Within the request's read deadline, plus the 2 s gunicorn lingers after the answer; the
    # trickle alone (90 more bytes, one a second) would hold both workers for 90 s.
    assert took < REQUEST_READ_TIMEOUT + 2 + 1.5, took
    assert all(line.startswith(b"HTTP/1.1 408") for line in answers), answers


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, None),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(120)) + b"\r\n", 431, None),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "validation_error"),
    ],
)
def test_gunicorns_own_refusals_are_json_in_the_error_shape(server, raw, status, code):
    got, headers, body = exchange(server, raw)

    assert got == status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == (code or "request_header_fields_too_large") and "<" not in error["message"]


def test_plain_http_is_redirected_to_https_except_the_probes(server):
    redirected, headers, _ = get(server, "/login")
    behind_tls_proxy, proxied, _ = get(server, "/login", "X-Forwarded-Proto: https")

    assert redirected == 301 and headers["location"] == "https://localhost/login"
    assert behind_tls_proxy == 200
    assert "max-age=31536000" in proxied["strict-transport-security"]
    assert get(server, "/healthz")[0] == 200 and get(server, "/readyz")[0] in (200, 503)


def test_html_pages_carry_a_content_security_policy_and_json_does_not(server):
    _, page, _ = get(server, "/login", "X-Forwarded-Proto: https")
    _, docs, _ = get(server, "/api/docs/", "X-Forwarded-Proto: https")
    _, api, _ = get(server, "/healthz")

    for headers in (page, docs):
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "content-security-policy" not in api

"""Gunicorn's sync worker with a read timeout per connection, and gunicorn's own error answers
in the API's JSON shape (config/gunicorn.py names both).

A sync worker serves one connection at a time (and one request per connection), reading the
request from a blocking socket: a client that sends half a body and stops held the worker until
gunicorn's `timeout` killed it, and a few such clients stalled the whole service. Here each read
waits at most GUNICORN_CLIENT_TIMEOUT seconds (5), and all of a request's reads end
GUNICORN_REQUEST_READ_TIMEOUT seconds (15) after its connection was accepted, so a client that
stops, or one that trickles a byte every few seconds, frees its worker within that time; a
request whose body does not arrive in time is answered 408 by
config.errors.RequestBodyLimitMiddleware.

Requests gunicorn refuses before the application sees them (a request line or headers over the
limits, malformed HTTP) are answered by gunicorn.util.write_error with an HTML page; it is
replaced by one that writes our error body.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

# gunicorn's refusals: status -> our error code.
ERROR_CODES = {
    400: "validation_error",
    403: "permission_denied",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's answer as JSON; gunicorn's own message (which quotes the
    request) stays in its log."""
    code = ERROR_CODES.get(status_int, "error")
    body = json.dumps({"error": {"code": code, "message": f"{reason}."}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error  # looked up on the module by gunicorn's workers at each error


# Validated by config/gunicorn.py when the server starts.
CLIENT_TIMEOUT_SECONDS = float(os.environ.get("GUNICORN_CLIENT_TIMEOUT") or 5)
REQUEST_READ_SECONDS = float(os.environ.get("GUNICORN_REQUEST_READ_TIMEOUT") or 15)


class DeadlineSocket(socket.socket):
    """A client's socket whose reads wait at most CLIENT_TIMEOUT_SECONDS each and, together,
    end at `read_deadline` (time.monotonic()); a read past it times out at once. Writes keep
    the per-operation timeout only: the answer is not hurried by the time its request took.

    The timeout is changed only in the last CLIENT_TIMEOUT_SECONDS before the deadline: setting
    it on every read cost a fifth of the throughput of a small request."""

    read_deadline = 0.0
    _shortened = False

    def _arm(self) -> None:
        left = self.read_deadline - time.monotonic()
        if left < CLIENT_TIMEOUT_SECONDS:  # the per-read timeout would outlast the deadline
            if left <= 0:
                raise TimeoutError("the request was not read in time")
            self.settimeout(left)
            self._shortened = True

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._shortened:
            self.settimeout(CLIENT_TIMEOUT_SECONDS)
            self._shortened = False
        super().sendall(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)


class TimedSyncWorker(SyncWorker):
    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        timed = DeadlineSocket(client.family, client.type, client.proto, fileno=client.detach())
        timed.read_deadline = time.monotonic() + REQUEST_READ_SECONDS
        timed.settimeout(CLIENT_TIMEOUT_SECONDS)  # each read and write; SyncWorker left it blocking
        super().handle(listener, timed, addr)

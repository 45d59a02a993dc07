"""Gunicorn's sync worker with a read timeout per connection, and gunicorn's own error answers
in the API's JSON shape (config/gunicorn.py names both).

A sync worker serves one connection at a time, reading the request from a blocking socket: a
client that sends half a body and stops held the worker until gunicorn's `timeout` killed it,
and a few such clients stalled the whole service. Here each read waits at most
GUNICORN_CLIENT_TIMEOUT seconds (5), so a stalled client frees its worker within that time; a
request whose body stops coming is answered 408 by config.errors.RequestBodyLimitMiddleware.
(A client that trickles a byte every few seconds can still hold a worker for as long as it
trickles: on the open internet, run behind a buffering proxy such as nginx, README "Processes".)

Requests gunicorn refuses before the application sees them (a request line or headers over the
limits, malformed HTTP) are answered by gunicorn.util.write_error with an HTML page; it is
replaced by one that writes our error body.
"""

from __future__ import annotations

import json
import os
import socket
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


class TimedSyncWorker(SyncWorker):
    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        client.settimeout(CLIENT_TIMEOUT_SECONDS)  # each read and write; SyncWorker left it blocking
        super().handle(listener, client, addr)

"""How a webhook delivery reaches its endpoint: one POST through requests, bounded as a whole and
made only to addresses that were checked.

- requests' timeout bounds each connect and each read, not the attempt: a receiver that answers a
  byte at a time would hold the worker as long as it liked. An attempt has one deadline for
  connecting, sending and reading; when it passes, a timer shuts the connection's socket down,
  whatever read or write is blocked on it. (Looking the host up comes first, bounded by the
  resolver's own timeout, not by the deadline.)
- The answer is streamed and only the start of a non-2xx body is read, for the attempt log: a
  huge answer is never downloaded.
- Each connection resolves the host once, checks every address with the rule endpoints are
  registered with (checked_addresses), and connects to those addresses: a name that answers a
  public address to a check and a private one a moment later (DNS rebinding) cannot lead the
  connection elsewhere. The Host header, TLS SNI and the certificate check keep the host name.
  Proxies from the environment are not used, since they would make the connection instead.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.util.connection import create_connection

from notifications.errors import InvalidInput

# The start of a failed answer kept in the attempt log; UTF-8 takes at most 4 bytes a character.
EXCERPT_CHARACTERS = 500
EXCERPT_BYTES = 4 * EXCERPT_CHARACTERS


@dataclass(frozen=True)
class Answer:
    status_code: int
    excerpt: str  # the start of the body of a non-2xx answer; empty for a 2xx one


def checked_addresses(host: str) -> list[str]:
    """The addresses `host` resolves to now (an address literal is itself), each of them public
    unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES. InvalidInput when it does not resolve, or when any
    address is private, loopback, link-local or reserved (our workers must not be turned against
    our own network)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput("The URL's host name does not resolve.", field="url") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        for address in addresses:
            parsed = ipaddress.ip_address(address.split("%")[0])  # without an IPv6 scope
            if not parsed.is_global:
                raise InvalidInput(f"The URL's host is a private or reserved address ({parsed}).", field="url")
    return addresses


def post(url: str, *, body: bytes, headers: dict[str, str], seconds: float) -> Answer:
    """POST `body` to `url` within `seconds` in all, once the host is looked up. Raises
    InvalidInput when the host's addresses are refused, requests.Timeout when the deadline
    passed, and other requests.RequestException for any other failure."""
    with Deadline(seconds) as deadline, requests.Session() as session:
        session.trust_env = False
        adapter = _DeadlineAdapter(deadline)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with session.post(
                url, data=body, headers=headers, timeout=seconds, allow_redirects=False, stream=True
            ) as answer:
                excerpt = "" if 200 <= answer.status_code < 300 else _excerpt(answer, deadline)
        except requests.RequestException as exc:
            if deadline.passed:
                raise requests.Timeout(f"no complete answer within {seconds:g} s") from exc
            raise
    return Answer(answer.status_code, excerpt)


def _excerpt(answer: requests.Response, deadline: Deadline) -> str:
    """The start of the answer's body; what stopped it when even that did not come."""
    try:
        data = answer.raw.read(EXCERPT_BYTES, decode_content=True)
    except (HTTPError, OSError):
        return f"({'no complete answer within the deadline' if deadline.passed else 'the answer was cut short'})"
    return data.decode("utf-8", errors="replace")[:EXCERPT_CHARACTERS]


class Deadline:
    """One attempt's deadline: what is left of it for each connect, and a timer that shuts the
    sockets handed to `watch` when it passes."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.passed = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._timer.cancel()

    def left(self) -> float:
        return self._ends - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.passed:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also under TLS: it wakes a read blocked in another thread.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _open(conn: HTTPConnection, deadline: Deadline) -> socket.socket:
    """A connection's socket: the host resolved and checked once, then each of its addresses
    tried in turn with what is left of the deadline."""
    addresses = checked_addresses(conn.host)
    failure: OSError | None = None
    for address in addresses:
        if deadline.left() <= 0:
            raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out.")
        try:
            sock = create_connection((address, conn.port), deadline.left(), conn.source_address, conn.socket_options)
        except OSError as exc:
            failure = exc
            continue
        deadline.watch(sock)
        return sock
    raise NewConnectionError(conn, f"Failed to establish a new connection: {failure}")


class _HTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return _open(self, self._deadline)


class _HTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return _open(self, self._deadline)

    def connect(self) -> None:
        # The TLS handshake is bounded by the socket's timeout (set from the deadline); the
        # socket it makes replaces the one watched, so it is watched too.
        super().connect()
        if self.sock is not None:
            self._deadline.watch(self.sock)


class _DeadlinePoolManager(PoolManager):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        self._deadline = deadline
        super().__init__(*args, **kwargs)

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = _HTTPSConnection if scheme == "https" else _HTTPConnection
        pool.conn_kw = {**pool.conn_kw, "deadline": self._deadline}
        return pool


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections of this attempt: checked addresses, one deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _DeadlinePoolManager(
            num_pools=connections, maxsize=maxsize, block=block, deadline=self._deadline, **pool_kwargs
        )

"""Run localstripe on 127.0.0.1 and a free port (printed as the first line), keeping its store
in memory only: upstream pickles every change to /tmp/localstripe.pickle, which parallel test
runs would share."""

from __future__ import annotations

import socket

from aiohttp import web
from localstripe import resources, server

resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
web.run_app(server.app, sock=sock, print=None, access_log=None)

"""Raw-socket clients for the HTTP server tests (tests/servers/test_http.py,
tests/servers/test_wsgi.py).  The server runs in the test's own hub; clients
are plain greenline sockets, and responses are parsed with httptools' response
parser, so every response's framing is checked by a parser that is not the
server's.  A plain module, imported by those tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httptools

from greenline import socket
from greenline.wsgi import WSGIServer


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world\n"]


@contextmanager
def serving(app: Any = hello, **kwargs: Any) -> Iterator[WSGIServer]:
    server = WSGIServer(("127.0.0.1", 0), app, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=1)


def connect(server: WSGIServer, timeout: float = 5) -> socket.socket:
    return socket.create_connection(server.address, timeout=timeout)


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    version: str = ""
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None


class _Collect:
    def __init__(self) -> None:
        self.done: list[Response] = []
        self.cur = Response()
        self.parser: Any = None
        self.chunks: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.cur.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.cur.status = self.parser.get_status_code()
        self.cur.version = self.parser.get_http_version()
        self.cur.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_message_complete(self) -> None:
        self.cur.body = b"".join(self.chunks)
        self.chunks = []
        self.done.append(self.cur)
        self.cur = Response()


def read_responses(sock: socket.socket, count: int) -> tuple[list[Response], bool]:
    """Read ``count`` responses (fewer if the server closes first); also
    whether the server closed the connection right after them (looked at
    only if it already did: never waits for it)."""
    col = _Collect()
    col.parser = httptools.HttpResponseParser(col)
    closed = False
    while len(col.done) < count:
        data = sock.recv(65536)
        if not data:
            closed = True
            try:
                col.parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
            break
        col.parser.feed_data(data)
    return col.done, closed


def request(server: WSGIServer, raw: bytes, count: int = 1) -> list[Response]:
    """Send ``raw`` on a new connection; read ``count`` responses."""
    c = connect(server)
    try:
        c.sendall(raw)
        return read_responses(c, count)[0]
    finally:
        c.close()


def read_until_close(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Everything the server sends until it closes (raises on a timeout)."""
    out = bytearray()
    while data := sock.recv(65536):
        out += data
        assert len(out) < limit
    return bytes(out)


def raw_exchange(server: WSGIServer, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection, half-close, and read to EOF."""
    c = connect(server)
    try:
        c.sendall(raw)
        c.shutdown(socket.SHUT_WR)
        return read_until_close(c)
    finally:
        c.close()


def status_of(data: bytes) -> int:
    """Status code of the first response in raw bytes."""
    assert data.startswith(b"HTTP/1.1 "), data[:80]
    return int(data[9:12])


def closed_after(sock: socket.socket) -> bool:
    """True if the server closes the connection (reads nothing else)."""
    return sock.recv(65536) == b""

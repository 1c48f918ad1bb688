"""Raw-socket clients for the HTTP server tests (tests/wsgi/test_http.py,
tests/wsgi/test_server.py: the server runs in the test's own hub; and
tests/wsgi/test_serve.py, test_gunicorn.py: it runs in another process).
Clients are plain greenline sockets, and responses are parsed with httptools'
response parser, so every response's framing is checked by a parser that is
not the server's.  A plain module, imported by those tests."""

from __future__ import annotations

import select as stdselect
import textwrap
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


# -- clients of a server in another process (test_serve.py, test_gunicorn.py) --


#: The app those tests serve (written to webapp.py in the test's directory):
#: its path, pid, multiprocess/multithread flags and URL scheme back.
WEBAPP = textwrap.dedent("""
    import os
    import time

    import greenline

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path.startswith("/slow"):
            greenline.sleep(float(environ["QUERY_STRING"] or "0.05"))
        elif path.startswith("/sleep"):
            time.sleep(float(environ["QUERY_STRING"] or "0.2"))  # cooperative only when patched
        elif path == "/upload":
            n = len(environ["wsgi.input"].read())
            path = "/upload %d" % n
        body = ("%s %d %s %s %s" % (path, os.getpid(), environ["wsgi.multiprocess"],
                                    environ["wsgi.multithread"], environ["wsgi.url_scheme"])).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
""")


def fetch(address, path: str, extra: str = "", timeout: float = 10):
    c = socket.create_connection(address, timeout=timeout)
    try:
        c.sendall(get(path, extra))
        (r,), _ = read_responses(c, 1)
        return r
    finally:
        c.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def _closed_cleanly(sock: socket.socket) -> bool:
    """Whether the server has closed this idle connection (end of file
    waiting); raises if it reset it.  Never blocks."""
    poller = stdselect.poll()
    poller.register(sock.fileno(), stdselect.POLLIN | stdselect.POLLRDHUP)
    if not poller.poll(0):
        return False
    data = sock.recv(1, socket.MSG_PEEK)
    assert data == b"", f"unsolicited bytes from the server: {data!r}"
    return True


class LoopClient:
    """GET after GET over keep-alive connections; a new connection when the
    server closes one (unless told not to reconnect).  Every request sent is
    accounted for: answered (200, its own path back), or lost."""

    def __init__(self, address, name: str, path: str = "") -> None:
        self.address = address
        self.name = name
        self.path = path or f"/{name}"
        self.answered = 0
        self.connections = 0
        self.server_closes = 0   # "Connection: close" in a response
        self.clean_closes = 0    # end of file on an idle connection, before we sent anything
        self.lost: list[str] = []
        self.refused = False
        self.reconnect = True
        self.running = True
        self.pids: set[int] = set()

    def run(self) -> None:
        sock = None
        i = 0
        try:
            while self.running:
                if sock is None:
                    if not self.reconnect:
                        return
                    try:
                        sock = socket.create_connection(self.address, timeout=10)
                    except ConnectionRefusedError:
                        self.refused = True
                        return
                    self.connections += 1
                elif _closed_cleanly(sock):
                    self.clean_closes += 1
                    sock.close()
                    sock = None
                    continue
                path = f"{self.path}/{i}"
                sock.sendall(get(path))
                try:
                    responses, closed = read_responses(sock, 1)
                except OSError as e:
                    self.lost.append(f"{path}: {e!r}")
                    return
                if not responses:
                    self.lost.append(f"{path}: closed without a response")
                    return
                (r,) = responses
                words = r.body.decode().split()
                assert r.status == 200 and words[0] == path, (r.status, r.body)
                self.pids.add(int(words[1]))
                self.answered += 1
                i += 1
                if r.header("Connection") == "close" or closed:
                    self.server_closes += 1
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

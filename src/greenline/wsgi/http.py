"""HTTP/1.1 on one connection, server side: every protocol rule in one place.

What a request may look like and what a response must look like (RFC 9110,
RFC 9112) is decided here and nowhere else; :mod:`greenline.wsgi`
only maps requests and responses to and from PEP 3333.

* Parsing is llhttp's, through ``httptools``, in strict mode: it refuses
  Content-Length together with Transfer-Encoding, two Content-Lengths,
  whitespace before a header's colon, obsolete line folding, bare CR or LF,
  control characters in field values and malformed chunk sizes.  What llhttp
  leaves to its user is checked in the callbacks below: the HTTP version (1.0
  and 1.1 only, else 505), exactly one Host on 1.1 (else 400), the sizes of
  the request line (414), of a field, of the field count and of the whole
  head (431), the body size (413) and ``Expect`` (417 unless 100-continue).
* One parser per connection is fed whatever ``recv_into`` returns, into a
  buffer shared by all the connections of a server (a connection holds no
  buffer while it waits).  Requests pipelined behind the one being answered
  are parsed ahead, at most :attr:`Limits.max_pipeline` of them, and answered
  in order.
* A request body is never held whole: :class:`Request` is a file object whose
  reads pull from the socket only as far as the reader asks, within the
  framing (Content-Length or chunked).  ``100 Continue`` is sent the first
  time the body is read, never otherwise.  An unread body is drained, up to
  :attr:`Limits.max_drain` bytes, before the next request on the connection;
  a larger one closes the connection instead.
* Responses: the head is built with one join and sent with the body in one
  ``sendall`` when the body is known whole; Content-Length when known,
  chunked on HTTP/1.1 when not, close-delimited on HTTP/1.0; no body after
  HEAD, 204 or 304; ``Date`` (formatted once a second) and ``Server``; header
  names must be tokens, and no CR, LF or NUL may reach the wire from a name,
  a value or the status line.
* Timeouts without a timer per request: the connection publishes a deadline
  (:attr:`HTTPConnection.deadline`, 0 when none) while it waits for a head or
  a body, and its server's watchdog throws :class:`RequestTimeout` into a
  green thread parked past it.
* Closing without losing a request: when the server stops, a connection
  waiting for its next request is not cut at once (a request already on its
  way would be lost, or answered by a reset): it gets a last call
  (:attr:`HTTPConnection.last_call`), and a request arriving by then is
  answered with ``Connection: close``.  Whenever the server, not the client,
  ends a connection it closes it lingering (:meth:`HTTPConnection.linger`):
  our FIN first, then what the client still sends is read and dropped until
  it closes too, so that a late request meets a clean end of file rather
  than a reset that could also destroy the last response in the client's
  receive buffer.

May import: the standard library, ``httptools`` and :mod:`greenline.socket`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate
from time import monotonic as _monotonic
from time import time as _time
from typing import Any

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from greenline import socket as gsocket

__all__ = [
    "Limits", "HTTPError", "RequestTimeout", "Request", "HTTPConnection", "Shared",
    "REASONS", "format_date",
]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may make the server hold or wait for.

    The field limits are gunicorn's defaults; the request-target limit is
    gunicorn's largest allowed request line (its default, 4094, counts the
    method and version too); the body limit is waitress's.  Timeouts are in
    seconds.
    """

    #: Longest request target (the URL); longer gets 414.
    max_request_line: int = 8190
    #: Longest header field, name and value together; longer gets 431.
    max_field_size: int = 8190
    #: Most header fields in one request; more gets 431.
    max_fields: int = 100
    #: Largest request head in bytes; larger gets 431.
    max_head_size: int = 65536
    #: Largest request body (Content-Length or chunked); larger gets 413.
    #: None: no limit.
    max_body_size: int | None = 1 << 30
    #: Unread body bytes the server reads and discards to keep a connection;
    #: a longer remainder closes the connection instead.
    max_drain: int = 1 << 18
    #: Requests parsed ahead of the one being answered; a client pipelining
    #: more is answered up to there and the connection is then closed.
    max_pipeline: int = 64
    #: From the first byte of a request to the end of its head (slowloris).
    header_timeout: float = 10.0
    #: Idle time allowed between requests on a kept-alive connection (and
    #: before the first one).  0: no keep-alive, every response closes its
    #: connection (the wait for the first request is then header_timeout).
    keepalive_timeout: float = 5.0
    #: Longest wait for the next bytes of a request body.
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not self.keepalive_timeout >= 0:
            raise ValueError("keepalive_timeout must not be negative")
        for name in ("max_request_line", "max_field_size", "max_fields", "max_head_size",
                     "max_pipeline"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_body_size is not None and self.max_body_size < 0:
            raise ValueError("max_body_size must not be negative")
        if self.max_drain < 0:
            raise ValueError("max_drain must not be negative")


REASONS: dict[int, str] = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 505: "HTTP Version Not Supported",
}


class HTTPError(Exception):
    """The client broke a rule: the request gets ``status`` and the
    connection is closed.  Raised to the application too when it reads a body
    that turns out to be malformed, too large, or cut short."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail or REASONS.get(status, "")

    def __str__(self) -> str:
        return f"{self.status} {self.detail}"


class RequestTimeout(HTTPError):
    """The client took too long to send a request head or body (408)."""

    def __init__(self, detail: str = "Request Timeout") -> None:
        super().__init__(408, detail)


class _PipelineFull(Exception):
    """Raised in the parser to stop parsing ahead."""


# -- response helpers ---------------------------------------------------

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"

# Framing of a response body, decided when its head is built.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = 0, 1, 2, 3

# Header names an application may send, by kind.  Every name seen is cached
# with its kind (bounded), so the per-response check is one dict lookup.
_PLAIN, _CONTENT_LENGTH, _DATE, _SERVER, _CONNECTION, _FORBIDDEN = range(6)
_SPECIAL_NAMES = {
    "content-length": _CONTENT_LENGTH, "date": _DATE, "server": _SERVER,
    "connection": _CONNECTION,
    # Hop-by-hop: the server owns the connection and the framing (PEP 3333).
    "transfer-encoding": _FORBIDDEN, "keep-alive": _FORBIDDEN, "te": _FORBIDDEN,
    "trailer": _FORBIDDEN, "upgrade": _FORBIDDEN, "proxy-connection": _FORBIDDEN,
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NAME_CACHE_MAX = 1024
_name_kinds: dict[str, int] = {}

_STATUS = re.compile(r"([1-5][0-9][0-9]) [\x20-\x7e\x80-\xff\t]*")
_status_codes: dict[str, int] = {}


def _name_kind(name: Any) -> int:
    """Classify (and validate) a response header name; cached by the caller."""
    if type(name) is not str:
        raise TypeError(f"header name must be str, not {type(name).__name__}: {name!r}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    kind = _SPECIAL_NAMES.get(name.lower(), _PLAIN)
    if len(_name_kinds) < _NAME_CACHE_MAX:
        _name_kinds[name] = kind
    return kind


def _status_code(status: Any) -> int:
    if type(status) is not str:
        raise TypeError(f"status must be str, not {type(status).__name__}")
    m = _STATUS.fullmatch(status)
    if m is None:
        raise ValueError(f"invalid status line {status!r} (expected '200 OK')")
    code = int(m.group(1))
    if code < 200:
        # Informational responses are the server's business (100 Continue).
        raise ValueError(f"an application cannot send {status!r}")
    if len(_status_codes) < _NAME_CACHE_MAX:
        _status_codes[status] = code
    return code


_date_cache: list[Any] = [0, "", ""]


def format_date() -> str:
    """``Date: ...\\r\\n`` for now, formatted at most once a second."""
    now = int(_time())
    if now != _date_cache[0]:
        _refresh_date(now)
    return _date_cache[1]  # type: ignore[no-any-return]


def _error_response(status: int, detail: str = "") -> bytes:
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}\n".encode("latin-1")
    return (f"HTTP/1.1 {status} {reason}\r\n{format_date()}Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1") + body


# Response heads by (Server line, status, *headers): the validated status line and
# header lines (with Date and Server), the status code, the application's
# Content-Length, and whether it asked to close.  Emptied every second, when
# the Date changes; bounded, so applications whose headers differ on every
# response (cookies, ETags) only pay for building theirs.
_heads: dict[Any, tuple[bytes, int, int | None, bool]] = {}
_HEAD_CACHE_MAX = 512


def _refresh_date(now: int) -> None:
    _date_cache[1] = f"Date: {formatdate(now, usegmt=True)}\r\n"
    _date_cache[0] = now
    _heads.clear()


def _head_entry(status: Any, headers: Any, server_line: str) -> tuple[bytes, int, int | None, bool]:
    """Validate and format a status and application headers (the slow path
    of :meth:`HTTPConnection._head`)."""
    code = _status_codes.get(status) or _status_code(status)
    if type(headers) is not list:
        raise TypeError(f"headers must be a list, not {type(headers).__name__}")
    # Every item of ``lines`` ends with the one CRLF it is allowed.
    lines = [f"HTTP/1.1 {status}\r\n"]
    app_length: int | None = None
    special = 0  # a bit per kind of header seen
    close = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"a header must be a (name, value) tuple, not {item!r}")
        name, value = item
        kind = _name_kinds.get(name)
        if kind is None:
            kind = _name_kind(name)
        if type(value) is not str:
            raise TypeError(f"value of header {name!r} must be str, not {type(value).__name__}")
        if kind:
            special |= 1 << kind
            if kind == _CONTENT_LENGTH:
                if not value.isdigit() or not value.isascii():
                    raise ValueError(f"invalid Content-Length {value!r}")
                app_length = int(value)
            elif kind == _CONNECTION:
                if "close" in value.lower():
                    close = True
                continue  # the server writes its own
            elif kind == _FORBIDDEN:
                raise ValueError(f"hop-by-hop header {name!r} is the server's to send")
        lines.append(f"{name}: {value}\r\n")
    if not special & (1 << _DATE):
        lines.append(format_date())
    if not special & (1 << _SERVER) and server_line:
        lines.append(server_line)
    head = "".join(lines)
    # The only line breaks are ours: none came from a name, a value or the
    # status (a header injection), and no NUL either.
    n = len(lines)
    if head.count("\n") != n or head.count("\r") != n or "\0" in head:
        raise ValueError("CR, LF or NUL in the response status or headers")
    return head.encode("latin-1"), code, app_length, close


# -- requests ------------------------------------------------------------

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                                    "CONNECT", "TRACE")}

# Request header names llhttp has accepted, lower-cased, by meaning.
_R_PLAIN, _R_HOST, _R_CL, _R_TE, _R_EXPECT = range(5)
_R_SPECIAL = {b"host": _R_HOST, b"content-length": _R_CL, b"transfer-encoding": _R_TE,
              b"expect": _R_EXPECT}
_request_kinds: dict[bytes, int] = {}

_NO_HEADERS: list[tuple[str, str]] = []
# Between heads: no list of request fields (on_url starts one).
_NO_FIELDS: list[tuple[bytes, bytes]] = []


class Request:
    """One request: its head, its body as a read-only binary file, and the
    state of its response.

    ``read``, ``readline``, ``readlines`` and iteration return ``b""`` (or
    stop) at the end of the body as framed by Content-Length or chunked
    encoding; they raise :class:`HTTPError` if the body is malformed, larger
    than the limit, or cut short by the client.
    """

    __slots__ = (
        "conn", "method", "target", "version", "headers", "keep_alive", "content_length",
        "chunked", "expect_continue", "upgrade", "_body", "complete", "received",
        "status", "out_headers", "head_sent", "framing", "remaining", "sent", "close",
        "continue_sent", "code",
    )

    def __init__(self, conn: HTTPConnection, method: str, target: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade = False
        self._body = bytearray()
        self.complete = False
        self.received = 0
        # The response:
        self.status: str | None = None
        self.out_headers: list[tuple[str, str]] = _NO_HEADERS
        self.head_sent = False
        self.framing = _LENGTH
        self.remaining = 0
        self.sent = 0
        self.close = False
        self.continue_sent = False
        self.code = 0

    # -- the body, as a file ----------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        body = self._body
        if size is None or size < 0:
            while not self.complete:
                self.conn.fill(self)
            data = bytes(body)
            body.clear()
            return data
        while len(body) < size and not self.complete:
            self.conn.fill(self)
        data = bytes(body[:size])
        del body[:size]
        return data

    def read1(self, size: int = -1) -> bytes:
        """At most one read from the socket, as :class:`io.BufferedReader`."""
        if not self._body and not self.complete:
            self.conn.fill(self)
        return self.read(len(self._body) if size is None or size < 0 else min(size, len(self._body)))

    def readline(self, size: int | None = -1) -> bytes:
        body = self._body
        start = 0
        while True:
            end = body.find(b"\n", start)
            if end >= 0:
                n = end + 1
                break
            if self.complete or (size is not None and 0 <= size <= len(body)):
                n = len(body)
                break
            start = len(body)
            self.conn.fill(self)
        if size is not None and 0 <= size < n:
            n = size
        data = bytes(body[:n])
        del body[:n]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Request:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target!r} HTTP/{self.version}>"


class Shared:
    """What the connections of one server (one OS thread) share: the
    limits, the receive buffer, llhttp's callbacks, the Server header.
    Whatever is the same for all of them is kept here once, not in each
    connection, idle ones included (thousands of them).

    A parser keeps, for each callback, what ``getattr`` gives on its
    protocol object: with a method, a new bound method per parser (64 bytes
    apiece).  Here the protocol is one object for all the connections, whose
    callbacks are bound once (:attr:`protocol`), so an idle connection pays
    for none of them.  ``feed_data`` never switches green threads (no
    callback blocks), so pointing :attr:`conn` at the connection about to be
    fed is all the sharing takes.  One per OS thread: another thread's feed
    could interleave with ours.
    """

    __slots__ = ("limits", "request_class", "server_line", "keep_alive", "buf", "conn", "protocol")

    def __init__(self, limits: Limits | None = None, request_class: type[Request] | None = None,
                 server: str = "greenline", size: int = 65536) -> None:
        self.limits = limits or Limits()
        #: What requests are made of (a subclass of :class:`Request`).
        self.request_class = request_class or Request
        #: The Server header line ("" for none).
        self.server_line = f"Server: {server}\r\n" if server else ""
        self.keep_alive = self.limits.keepalive_timeout > 0
        #: The receive buffer: a connection holds no buffer while it waits.
        self.buf = memoryview(bytearray(size))
        #: The connection being fed.
        self.conn: Any = None
        #: What parsers are given as their protocol.
        self.protocol = _Callbacks(self)

    # No on_message_begin (a callback less per request): the state of a
    # head is reset when the head is complete.

    def on_url(self, url: bytes) -> None:
        c = self.conn
        if c._url:
            url = c._url + url
        else:
            # A new head begins: its field list (none is kept while idle).
            c._headers = []
        if len(url) > self.limits.max_request_line:
            raise HTTPError(414)
        c._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        c = self.conn
        limits = self.limits
        size = len(name) + len(value)
        if size > limits.max_field_size:
            raise HTTPError(431, "header field too large")
        headers = c._headers
        headers.append((name, value))
        if len(headers) > limits.max_fields:
            raise HTTPError(431, "too many header fields")
        c._head_size += size + 4
        if c._head_size > limits.max_head_size:
            raise HTTPError(431, "request head too large")

    def on_headers_complete(self) -> None:
        c = self.conn
        pending = c._pending
        if pending is not None and len(pending) >= self.limits.max_pipeline:
            raise _PipelineFull
        parser = c._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise HTTPError(505)
        method = parser.get_method()
        headers = c._headers
        keep_alive = parser.should_keep_alive()
        c.client_done = not keep_alive
        req = self.request_class(c, _METHODS.get(method) or method.decode("latin-1"), c._url,
                                 version, headers, keep_alive and self.keep_alive)
        c._url = b""
        c._headers = _NO_FIELDS
        c._head_size = 0
        hosts = 0
        for name, value in headers:
            kind = _request_kinds.get(name)
            if kind is None:
                kind = _R_SPECIAL.get(name.lower(), _R_PLAIN)
                if len(_request_kinds) < _NAME_CACHE_MAX:
                    _request_kinds[name] = kind
            if kind:
                if kind == _R_HOST:
                    hosts += 1
                elif kind == _R_CL:
                    # llhttp has checked it: digits only, and only one.
                    req.content_length = int(value)
                elif kind == _R_TE:
                    # Without chunked last the body has no end (RFC 9112
                    # 6.3); llhttp says so only after this callback.
                    if value.rpartition(b",")[2].strip().lower() != b"chunked":
                        raise HTTPError(400, "Transfer-Encoding must end with chunked")
                    req.chunked = True
                elif kind == _R_EXPECT:
                    if value.lower() != b"100-continue":
                        raise HTTPError(417)
                    req.expect_continue = version == "1.1"
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise HTTPError(400, "HTTP/1.1 needs exactly one Host header")
        max_body = self.limits.max_body_size
        if max_body is not None and req.content_length is not None and req.content_length > max_body:
            raise HTTPError(413)
        c._current = req
        if pending is None:
            c._pending = [req]
        else:
            pending.append(req)

    def on_body(self, data: bytes) -> None:
        c = self.conn
        req = c._current
        assert req is not None
        req.received += len(data)
        max_body = self.limits.max_body_size
        if max_body is not None and req.received > max_body:
            raise HTTPError(413)
        req._body += data

    def on_message_complete(self) -> None:
        req = self.conn._current
        if req is not None:
            req.complete = True


class _Callbacks:
    """A :class:`Shared`'s callbacks, bound once."""

    __slots__ = ("on_url", "on_header", "on_headers_complete", "on_body", "on_message_complete")

    def __init__(self, shared: Shared) -> None:
        self.on_url = shared.on_url
        self.on_header = shared.on_header
        self.on_headers_complete = shared.on_headers_complete
        self.on_body = shared.on_body
        self.on_message_complete = shared.on_message_complete


class HTTPConnection:
    """The server side of one HTTP/1.1 connection.

    ``next_request()`` returns the next :class:`Request` once its head is
    complete, or None when the connection should end (the client closed, an
    error was answered, a timeout).  The caller answers it with
    :meth:`send_all` (a whole body), or :meth:`send_part` and :meth:`send_end`
    (a stream), or :meth:`send_file`, having set ``req.status`` and
    ``req.out_headers``; then :meth:`finish` says whether the connection may
    serve another request.  Socket errors propagate to the caller.

    Everything here lives as long as the connection, idle ones included
    (thousands of them): slots, and nothing kept of a finished request.
    """

    __slots__ = (
        "sock", "shared", "deadline", "idle", "closing", "last_call", "broken", "peer_closed",
        "client_done", "timed_out", "_pending", "_error", "_done", "_current", "_url", "_headers",
        "_head_size", "_parser",
    )

    def __init__(self, sock: gsocket.socket, shared: Shared | None = None) -> None:
        self.sock = sock
        #: The server's: limits, buffer, callbacks (see :class:`Shared`).
        self.shared = shared = shared if shared is not None else Shared()
        #: While waiting for the client, when to give up (monotonic); 0: never.
        self.deadline = 0.0
        #: True while waiting for a request that has not begun.
        self.idle = False
        #: Set by the server when it stops: answer what was read, then close.
        self.closing = False
        #: While closing, until when (monotonic) a request that has not begun
        #: may still come: it is answered, with ``Connection: close``; 0 when
        #: closing means none may.
        self.last_call = 0.0
        #: A send failed: the connection is unusable.
        self.broken = False
        #: The client closed its side (we read end of file).
        self.peer_closed = False
        #: The last request said it was the client's last (Connection:
        #: close, or HTTP/1.0 without keep-alive).
        self.client_done = False
        #: The client was too slow to send a request: no lingering for it.
        self.timed_out = False
        # Requests parsed ahead (pipelining), None when there are none (as
        # almost always between requests: no list is kept then).
        self._pending: list[Request] | None = None
        self._error: HTTPError | None = None
        self._done = False  # parse nothing more (upgrade, pipeline full)
        # The parser's side (see Shared): the request whose head or body is
        # being parsed, and the head being received.
        self._current: Request | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = _NO_FIELDS
        self._head_size = 0
        self._parser: Any = HttpRequestParser(shared.protocol)

    def close(self) -> None:
        self._parser = None
        self._pending = None
        self._current = None
        if self.shared.conn is self:
            self.shared.conn = None

    # -- reading ----------------------------------------------------------

    def _feed(self, data: memoryview) -> None:
        """Parse ``data``; a protocol error is kept in ``self._error`` (it
        belongs to the request being parsed, answered in its turn)."""
        self.shared.conn = self
        try:
            self._parser.feed_data(data)
        except Exception as e:
            self._parse_failed(e)

    def _parse_failed(self, e: Exception) -> None:
        self._done = True
        if isinstance(e, HttpParserUpgrade):
            # The request is complete and what follows is another protocol:
            # answer the request as a plain one, then close.
            req = self._current
            if req is not None:
                req.upgrade = True
                req.keep_alive = False
            return
        if isinstance(e, HttpParserCallbackError):
            ctx = e.__context__
            if isinstance(ctx, _PipelineFull):
                return
            self._error = ctx if isinstance(ctx, HTTPError) else HTTPError(400, str(e))
        elif isinstance(e, HttpParserError):
            self._error = HTTPError(400, str(e))
        else:
            raise e

    def next_request(self) -> Request | None:
        """The next request, once its head is complete; None to close."""
        pending = self._pending
        if pending:
            req = pending.pop(0)
            if not pending:
                self._pending = None
            return req
        if self._error is not None:
            self._answer_error(self._error.status)
            return None
        if self._done or self._parser is None or (self.closing and not self.last_call):
            return None
        # The last request is answered (nothing of another has come): let it
        # go, rather than keep it through the wait.
        self._current = None
        shared = self.shared
        limits = shared.limits
        sock = self.sock
        buf = shared.buf
        # Nothing of the next request yet: the keep-alive timeout runs (or
        # the last call, if sooner).
        self.idle = True
        deadline = _monotonic() + (limits.keepalive_timeout or limits.header_timeout)
        if self.closing and self.last_call < deadline:
            deadline = self.last_call
        self.deadline = deadline
        received = 0
        while True:
            try:
                n = sock.recv_into(buf)
            except RequestTimeout:
                if not self.idle:
                    self._answer_error(408)
                return None
            except ConnectionError:
                self.broken = True
                return None
            finally:
                self.deadline = 0.0
            if not n:
                self.peer_closed = True
                return None
            self.idle = False
            shared.conn = self
            try:
                self._parser.feed_data(buf[:n])
            except Exception as e:
                self._parse_failed(e)
            pending = self._pending
            if pending:
                req = pending.pop(0)
                if not pending:
                    self._pending = None
                return req
            if self._error is not None:
                self._answer_error(self._error.status)
                return None
            if self._done:
                return None
            received += n
            if received > limits.max_head_size:
                # Whatever it is (llhttp skips some of it without callbacks),
                # no head is this large.
                self._answer_error(431)
                return None
            if received == n:
                # The head has begun: from now on the header timeout runs.
                deadline = _monotonic() + limits.header_timeout
            self.deadline = deadline

    def fill(self, req: Request) -> None:
        """Read more of ``req``'s body (the request being parsed)."""
        if self._error is not None:
            raise self._error
        if self._parser is None:
            raise HTTPError(400, "connection closed")
        sock = self.sock
        if req.expect_continue and not req.continue_sent and not req.head_sent:
            req.continue_sent = True
            self._sendall(_CONTINUE)
        shared = self.shared
        self.deadline = _monotonic() + shared.limits.body_timeout
        try:
            n = sock.recv_into(shared.buf)
        finally:
            self.deadline = 0.0
        if not n:
            self.peer_closed = True
            self._error = HTTPError(400, "the client closed the connection before the end of the body")
            self._done = True
            raise self._error
        self._feed(shared.buf[:n])
        if self._error is not None and not req.complete:
            raise self._error

    def finish(self, req: Request) -> bool:
        """After a response: may the connection serve another request?
        Drains what is left of the body if that is cheap."""
        if req.close or self.closing or self.broken or not req.keep_alive:
            return False
        if not req.complete:
            if req.expect_continue and not req.continue_sent:
                # The client waits for our word before it sends the body.
                return False
            left = self.shared.limits.max_drain
            body = req._body
            try:
                while not req.complete:
                    left -= len(body)
                    body.clear()
                    if left < 0:
                        return False
                    self.fill(req)
            except (HTTPError, OSError):
                return False
        return True

    def linger(self, timeout: float) -> None:
        """Close our side first, when the server ends the connection: send
        FIN, then read and drop what the client still sends (at most
        :attr:`Limits.max_drain` bytes, for at most ``timeout`` seconds) until
        it closes too.  Closing with unread data would send a reset instead,
        and a reset makes the client's system drop whatever it had received
        and not yet read (our last response, say).  Nothing to do when the
        client closed first, said it was done and sent it all, timed out,
        or the connection is broken."""
        cur = self._current
        if self.peer_closed or self.broken or self.timed_out or \
                (self.client_done and (cur is None or cur.complete)):
            return
        sock = self.sock
        try:
            sock.shutdown(gsocket.SHUT_WR)
        except OSError:
            return
        left = self.shared.limits.max_drain
        buf = self.shared.buf
        self.deadline = _monotonic() + timeout
        try:
            while left > 0:
                n = sock.recv_into(buf)
                if not n:
                    return
                left -= n
        except (OSError, HTTPError):
            pass
        finally:
            self.deadline = 0.0

    # -- writing ----------------------------------------------------------

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.broken = True
            raise

    def _answer_error(self, status: int) -> None:
        """Answer a request the protocol refused, then the connection closes
        (lingering: the client may still be sending what we refused)."""
        self._done = True
        if status == 408:
            self.timed_out = True
        try:
            self.sock.settimeout(1.0)  # a client that does not read must not keep us
            self.sock.sendall(_error_response(status))
        except OSError:
            self.broken = True

    def send_error(self, req: Request, status: int) -> None:
        """Answer ``req`` with an error status (nothing must have been sent)
        and mark the connection to close."""
        req.status = f"{status} {REASONS.get(status, 'Error')}"
        req.code = status
        req.close = True
        req.head_sent = True
        self._sendall(_error_response(status))

    def _head(self, req: Request, length: int | None) -> bytes:
        """The response head for ``req.status`` and ``req.out_headers``;
        ``length`` is the whole body's size if known.  Sets the framing."""
        status = req.status
        if status is None:
            raise RuntimeError("the response was started before its status was given")
        out = req.out_headers
        now = int(_time())
        if now != _date_cache[0]:
            _refresh_date(now)
        try:
            server_line = self.shared.server_line
            key: Any = (server_line, status, *out)
            entry = _heads.get(key)
        except TypeError:  # an unhashable header (a list): no caching
            key = None
            entry = None
        if entry is None:
            entry = _head_entry(status, out, self.shared.server_line)
            if key is not None and len(_heads) < _HEAD_CACHE_MAX:
                _heads[key] = entry
        prefix, code, app_length, close = entry
        req.code = code
        close = close or req.close or self.closing or not req.keep_alive
        # The body's framing.
        tail = ""
        if req.method == "HEAD" or code == 204 or code == 304:
            req.framing = _NONE
        elif app_length is not None:
            req.framing = _LENGTH
            req.remaining = app_length
        elif length is not None:
            req.framing = _LENGTH
            req.remaining = length
            tail = f"Content-Length: {length}\r\n"
        elif req.version == "1.1":
            req.framing = _CHUNKED
            tail = "Transfer-Encoding: chunked\r\n"
        else:
            req.framing = _UNTIL_CLOSE
            close = True
        if not close and not req.complete:
            # Keep the connection only if what is left of the body can be
            # read and thrown away cheaply.
            if req.expect_continue and not req.continue_sent:
                close = True
            elif req.content_length is not None and \
                    req.content_length - req.received + len(req._body) > self.shared.limits.max_drain:
                close = True
        if close:
            req.close = True
            return prefix + (tail + "Connection: close\r\n\r\n").encode()
        if req.version == "1.0":
            return prefix + (tail + "Connection: keep-alive\r\n\r\n").encode()
        if tail:
            return prefix + (tail + "\r\n").encode()
        return prefix + b"\r\n"

    def send_all(self, req: Request, body: bytes) -> None:
        """Send the whole response: head and ``body`` in one write when small."""
        head = self._head(req, len(body))
        req.head_sent = True
        framing = req.framing
        if framing == _NONE:
            self._sendall(head)
            return
        if framing == _LENGTH and req.remaining != len(body):
            # The application's Content-Length is wrong: never send more
            # than it said; if less, the client learns it from the close.
            if len(body) > req.remaining:
                body = body[:req.remaining]
            else:
                req.close = True
        req.sent = len(body)
        if len(body) <= 65536:
            try:
                self.sock.sendall(head + body)
            except OSError:
                self.broken = True
                raise
        else:
            self._sendall(head)
            self._sendall(body)

    def send_part(self, req: Request, data: bytes) -> None:
        """Send one piece of a body whose end is not known yet (the head
        first, if not sent)."""
        if not req.head_sent:
            head = self._head(req, None)
            req.head_sent = True
        else:
            head = b""
        framing = req.framing
        if framing == _NONE or not data:
            if head:
                self._sendall(head)
            return
        if framing == _LENGTH:
            if len(data) > req.remaining:
                data = data[:req.remaining]
            req.remaining -= len(data)
        req.sent += len(data)
        if framing == _CHUNKED:
            data = b"%x\r\n" % len(data) + data + b"\r\n"
        if head:
            if len(data) <= 65536:
                data = head + data
            else:
                self._sendall(head)
        self._sendall(data)

    def send_end(self, req: Request) -> None:
        """The body is over."""
        if not req.head_sent:
            # Nothing was sent: the body was empty, so its length is known.
            head = self._head(req, 0)
            req.head_sent = True
            if req.framing == _LENGTH and req.remaining:
                req.close = True
            self._sendall(head)
            return
        framing = req.framing
        if framing == _CHUNKED:
            self._sendall(_LAST_CHUNK)
        elif framing == _LENGTH and req.remaining:
            req.close = True  # shorter than its Content-Length said
        elif framing == _UNTIL_CLOSE:
            req.close = True

    def send_file(self, req: Request, file: Any, offset: int, count: int) -> None:
        """Send ``count`` bytes of a regular file from ``offset``, with
        ``sendfile(2)`` when the connection is not TLS."""
        head = self._head(req, count)
        req.head_sent = True
        self._sendall(head)
        if req.framing == _NONE:
            return
        if req.framing == _LENGTH:
            count = min(count, req.remaining)
            req.remaining -= count
        try:
            sent = self.sock.sendfile(file, offset, count) if count else 0
        except OSError:
            self.broken = True
            raise
        req.sent = sent
        if sent < count:
            req.close = True  # the file was shorter than announced

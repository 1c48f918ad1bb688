"""WSGIServer: a WSGI application (PEP 3333) served over HTTP/1.1, one green
thread per connection, with gevent.pywsgi's names::

    from greenline.wsgi import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, world\\n"]

    WSGIServer(("127.0.0.1", 8080), app).serve_forever()

The application runs in the connection's green thread, so it may block on
anything cooperative (greenline's sockets, or the stdlib's after
``monkey.patch_all()``) without holding up the other clients.

What happens on the wire is :mod:`greenline.wsgi.http`'s business; this
module maps a request to an ``environ`` and the application's answer to a
response:

* ``environ`` has every key PEP 3333 requires (``PATH_INFO`` percent-decoded
  and carried as latin-1), ``HTTP_*`` for each header (repeated headers
  joined with ", ", Cookie with "; "; names with an underscore dropped, since
  ``X_Y`` and ``X-Y`` would be the same key), ``wsgi.input`` streaming the
  body within its framing, ``wsgi.input_terminated`` (reading to ``b""`` is
  safe), ``wsgi.file_wrapper`` (``sendfile(2)`` for regular files), and
  ``RAW_URI``.
* ``start_response`` with ``exc_info``, the ``write()`` callable, and the
  iterable's ``close()`` called whatever happens.
* An application that raises, misuses ``start_response`` or yields something
  that is not bytes gets a 500 if nothing was sent yet, else its connection
  is closed; the error is logged once with its traceback, and the server
  goes on.
* An access log in the common log format, off unless ``log`` is given
  (:meth:`WSGIServer.log_request` writes a line; override it for another
  format).
* Stopping loses no request: ``close()`` stops accepting, a request being
  answered gets ``Connection: close``, and a connection waiting for its next
  request gets a last call of :data:`LAST_CALL` seconds, in which a request
  that was already on its way is still answered (with ``Connection:
  close``); then the connection closes, our side first
  (:meth:`~greenline.wsgi.http.HTTPConnection.linger`).

May import: :mod:`greenline.wsgi.http`, the stream server, and the hub and
tasks it runs on.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from greenlet import getcurrent

from greenline import socket as gsocket
from greenline._core.hub import get_hub
from greenline._core.task import Task
from greenline.servers.stream import StreamServer
from greenline.wsgi.forwarded import TrustedProxies, trusted_proxies
from greenline.wsgi.http import HTTPConnection, HTTPError, Limits, Request, RequestTimeout, Shared

__all__ = ["WSGIServer", "FileWrapper", "Limits", "LAST_CALL", "LINGER"]

logger = logging.getLogger("greenline.wsgi")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Bytes read from a socket in one call; the buffer is shared by all the
# connections of a server (greenline.wsgi.http.Shared), so its size costs
# nothing per connection.
RECV_SIZE = 65536

#: When the server stops, how long a connection waiting for its next request
#: may still send one (answered with Connection: close).  A client that was
#: sending just then gets its answer instead of a closed connection; one
#: silent for this long is not in the middle of anything.
LAST_CALL = 1.0
#: When the server ends a connection the client may still be sending on,
#: how long it reads and drops what comes, waiting for the client's close.
LINGER = 1.0


class FileWrapper:
    """``wsgi.file_wrapper``: the server sends a regular file with
    ``sendfile(2)``; anything else is read in blocks."""

    __slots__ = ("filelike", "blksize")

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Any:
        read = self.filelike.read
        while data := read(self.blksize):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _regular_file(wrapper: FileWrapper) -> tuple[int, int] | None:
    """``(offset, size left)`` if the wrapped file can go by sendfile."""
    f = wrapper.filelike
    try:
        fd = f.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        offset = f.tell()
    except (AttributeError, OSError, ValueError):
        return None
    return offset, max(st.st_size - offset, 0)


class _Exchange(Request):
    """A request with PEP 3333's callables: ``start_response`` and ``write``.
    Also ``wsgi.input``, so a request costs one object."""

    __slots__ = ()

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    # Too late to change the response: the application's
                    # error goes on up (PEP 3333), and the connection closes.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str:
            raise TypeError(f"status must be str, not {type(status).__name__}")
        if type(headers) is not list:
            raise TypeError(f"headers must be a list, not {type(headers).__name__}")
        self.status = status
        self.out_headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"write() takes bytes, not {type(data).__name__}")
            data = bytes(data)
        self.conn.send_part(self, data)


def _native(b: bytes) -> str:
    return b.decode("latin-1")


# Request header name (as sent) -> environ key; None: not passed on.
_cgi_keys: dict[bytes, str | None] = {}
_CGI_CACHE_MAX = 1024
_VERSIONS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


def _cgi_key(name: bytes) -> str | None:
    key: str | None
    if b"_" in name:
        key = None
    else:
        upper = name.decode("latin-1").upper().replace("-", "_")
        key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
    if len(_cgi_keys) < _CGI_CACHE_MAX:
        _cgi_keys[name] = key
    return key


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    """``(path, query)`` of a request target in any of its forms."""
    path, _, query = target.partition(b"?")
    if path[:1] != b"/":
        if path == b"*":
            return b"*", query
        # absolute-form (a proxy request): the path starts after the authority.
        _, sep, rest = path.partition(b"://")
        if sep:
            slash = rest.find(b"/")
            path = rest[slash:] if slash >= 0 else b"/"
        path = path.split(b"#", 1)[0]
    return path, query


class _Log:
    """Where a message goes: a logger, or anything with ``write``."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def write(self, line: str) -> None:
        t = self.target
        if isinstance(t, logging.Logger):
            t.info(line.rstrip("\n"))
        else:
            t.write(line)
            flush = getattr(t, "flush", None)
            if flush is not None:
                flush()


class WSGIServer(StreamServer):
    """Serve a WSGI ``application`` on ``listener`` (an address or a
    listening socket), gevent.pywsgi's signature.

    ``log``: the access log (common log format), a file-like object or a
    :class:`logging.Logger`; None (the default) logs no requests.
    ``error_log``: where application errors go, with their traceback; None
    (the default) is the ``greenline.wsgi`` logger; also ``wsgi.errors``
    when it has a ``write`` method (else ``sys.stderr``).
    ``environ``: extra keys for every request's environ.
    ``limits``: sizes and timeouts, see :class:`Limits`.
    ``server_header``: the ``Server`` header's value ("" for none).
    ``multiprocess``/``multithread``: what ``wsgi.multiprocess`` and
    ``wsgi.multithread`` say (``greenline serve`` sets them when it runs
    several processes or threads).
    ``max_connections``, ``idle_timeout``, ``ssl_context`` or
    ``certfile``/``keyfile``, ``proxy_protocol``: as for
    :class:`~greenline.servers.stream.StreamServer` (a connection without a
    valid PROXY header gets a 400).
    ``forwarded_allow_ips``: gunicorn's setting, the proxies whose
    X-Forwarded-For and X-Forwarded-Proto set ``REMOTE_ADDR`` and
    ``wsgi.url_scheme`` (:mod:`greenline.wsgi.forwarded`); None (the
    default): nobody's.
    """

    #: :meth:`stop`'s default: time for the last call (:data:`LAST_CALL`)
    #: and a lingering close (gevent's default, 1 s, would cut them short).
    stop_timeout: float = LAST_CALL + LINGER

    base_env: dict[str, Any] = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "greenline",
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }

    def __init__(self, listener: Any, application: WSGIApp | None = None, backlog: int | None = None,
                 spawn: Any = "default", log: Any = None, error_log: Any = None,
                 handler_class: Any = None, environ: dict[str, Any] | None = None, *,
                 limits: Limits | None = None, server_header: str = "greenline",
                 multiprocess: bool = False, multithread: bool = False,
                 max_connections: int | None = None, idle_timeout: float | None = None,
                 forwarded_allow_ips: str | list[str] | TrustedProxies | None = None,
                 **ssl_args: Any) -> None:
        super().__init__(listener, None, backlog=backlog, spawn=spawn, max_connections=max_connections,
                         idle_timeout=idle_timeout, **ssl_args)
        #: Whose X-Forwarded-* headers to believe (may be set until start()).
        self.forwarded_allow_ips = forwarded_allow_ips
        self._trusted = trusted_proxies(forwarded_allow_ips)
        if handler_class is not None:
            raise TypeError("handler_class is gevent.pywsgi's; greenline's WSGIServer has none")
        self.application = application
        self.limits = limits or Limits()
        self.server_header = server_header
        self.log = None if log is None else _Log(log)
        self.error_log = error_log
        self.environ: dict[str, Any] = dict(environ or {})
        self.multiprocess = multiprocess
        self.multithread = multithread
        self._shared: Shared | None = None
        self._live: dict[HTTPConnection, Any] = {}
        self._watchdog: Task | None = None
        self._last_call = 0.0
        self._last_call_timer: Any = None
        self._env: dict[str, Any] | None = None
        #: Application failures so far (each logged once).
        self.app_errors = 0

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        super().start()
        # The real port, still known after stop() (pywsgi's server_port is).
        self._address = self.address
        self._env = self.get_environ()
        self._trusted = trusted_proxies(self.forwarded_allow_ips)
        self._shared = Shared(self.limits, _Exchange, self.server_header, RECV_SIZE)
        self._watchdog = Task(self._watch)
        self._watchdog.name = f"http-timeouts-{self.server_port}"
        self._watchdog.start()

    def get_environ(self) -> dict[str, Any]:
        """The keys every request's environ starts with."""
        env = dict(self.base_env)
        host, port = self.address[:2]
        env["SERVER_NAME"] = host
        env["SERVER_PORT"] = str(port)
        env["wsgi.url_scheme"] = "https" if self.ssl_context is not None else "http"
        env["wsgi.multiprocess"] = self.multiprocess
        env["wsgi.multithread"] = self.multithread
        errors = self.error_log
        env["wsgi.errors"] = errors if hasattr(errors, "write") and not isinstance(
            errors, logging.Logger) else sys.stderr
        env.update(self.environ)
        return env

    def close(self) -> None:
        """Stop accepting.  A response in flight goes out with
        ``Connection: close``; a connection waiting for its next request may
        still send one for :data:`LAST_CALL` seconds, then it is closed."""
        if self.closed:
            return
        started = self.started
        super().close()
        self._last_call = time.monotonic() + LAST_CALL
        for conn in self._live:
            conn.closing = True
            conn.last_call = self._last_call
        if started:
            hub = get_hub()
            self._last_call_timer = hub.call_later(LAST_CALL, self._end_last_call)

    def _end_last_call(self, _arg: Any = None) -> None:
        # A hub callback: it must not block, and throwing does not.
        self._last_call_timer = None
        hub = get_hub()
        for conn, g in list(self._live.items()):
            if conn.idle and g in hub.parked:
                hub.throw(g, RequestTimeout("server stopping"))

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        hub = get_hub()
        if self._last_call_timer is not None:
            hub.cancel_timer(self._last_call_timer)
            self._last_call_timer = None
        wd = self._watchdog
        if wd is not None and not wd.dead and wd is not getcurrent():
            wd.kill(block=False)

    def _watch(self) -> None:
        """Throw RequestTimeout into connections parked past their deadline:
        one green thread for all of them instead of a timer per request."""
        hub = get_hub()
        lim = self.limits
        # A quarter of the shortest timeout: none fires more than 25 % late
        # (lingering, bounded by a socket timeout too, may be later).
        interval = min(t for t in (lim.header_timeout, lim.keepalive_timeout, lim.body_timeout, 4.0)
                       if t > 0) / 4
        live = self._live
        parked = hub.parked
        while live or not self.closed:
            hub.sleep(interval)
            now = time.monotonic()
            for conn, g in list(live.items()):
                d = conn.deadline
                if d and d < now and g in parked:
                    conn.deadline = 0.0
                    hub.throw(g, RequestTimeout())

    # -- one connection -----------------------------------------------------

    def handle(self, sock: gsocket.socket, address: Any) -> None:  # type: ignore[override]
        try:
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket)
        shared = self._shared
        if shared is None:  # handle() called without start()
            shared = self._shared = Shared(self.limits, _Exchange, self.server_header, RECV_SIZE)
        conn = HTTPConnection(sock, shared)
        if self.closed:
            # Accepted just before the server closed: it may still make its
            # request, within the last call.
            conn.closing = True
            conn.last_call = self._last_call
        env = self._env
        if env is None:
            env = self._env = self.get_environ()
        # The environ is made per request from the server's (no dict per
        # connection: an idle connection keeps nothing it does not need).
        if isinstance(address, tuple) and len(address) >= 2:
            remote_addr = str(address[0])
            remote_port = str(address[1])
        else:
            remote_addr = str(address or "")
            remote_port = ""
        trusted = self._trusted
        if trusted is not None and not trusted.trusts(remote_addr):
            trusted = None
        live = self._live
        live[conn] = getcurrent()
        cgi_keys = _cgi_keys
        app = self.application
        access = self.log
        try:
            while True:
                # An _Exchange (the connection makes them): typed loosely for
                # the calls below.
                req: Any = conn.next_request()
                if req is None:
                    break
                environ = env.copy()
                environ["REMOTE_ADDR"] = remote_addr
                environ["REMOTE_PORT"] = remote_port
                environ["REQUEST_METHOD"] = req.method
                target = req.target
                path, _, query = target.partition(b"?")
                if path[:1] != b"/":
                    path, query = _split_target(target)
                environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
                environ["QUERY_STRING"] = query.decode("latin-1")
                environ["RAW_URI"] = target.decode("latin-1")
                environ["SERVER_PROTOCOL"] = _VERSIONS[req.version]
                environ["wsgi.input"] = req
                for name, value in req.headers:
                    key = cgi_keys.get(name, "")
                    if key == "":
                        key = _cgi_key(name)
                    if key is None:
                        continue
                    if key in environ:
                        sep = "; " if key == "HTTP_COOKIE" or key == "HTTP_COOKIE2" else ", "
                        environ[key] = environ[key] + sep + value.decode("latin-1")
                    else:
                        environ[key] = value.decode("latin-1")
                if trusted is not None:
                    trusted.apply(environ)
                if access is not None:
                    started = time.monotonic()
                try:
                    result = app(environ, req.start_response)  # type: ignore[misc]
                except Exception as e:
                    self._failed(conn, req, e)
                else:
                    # The common case, kept short: one bytes in a list (which
                    # has no close() to call).
                    if type(result) is list and len(result) == 1 and type(result[0]) is bytes \
                            and req.status is not None and not req.head_sent:
                        try:
                            conn.send_all(req, result[0])
                        except Exception as e:
                            self._failed(conn, req, e)
                    else:
                        self._respond(conn, req, result)
                if access is not None:
                    self.log_request(req, environ, time.monotonic() - started)
                if req.close or not req.complete or not req.keep_alive or conn.closing or conn.broken:
                    if not conn.finish(req):
                        break
                # Nothing of this request is kept through the wait for the next.
                req = environ = result = None  # type: ignore[assignment]
            # We end it (not an error, not the client): our side first.
            conn.linger(LINGER)
        finally:
            del live[conn]
            conn.close()

    def proxy_header_failed(self, sock: gsocket.socket, address: Any, reason: str) -> None:
        """No valid PROXY protocol header: answer 400, close our side first
        and drop what the client sent (for :data:`LINGER` at most), so that
        it reads the 400 rather than a reset."""
        body = b"400 Bad Request\n"
        try:
            sock.settimeout(LINGER)
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
            sock.shutdown(gsocket.SHUT_WR)
            deadline = time.monotonic() + LINGER
            left = 1 << 18
            while left > 0 and time.monotonic() < deadline:
                n = len(sock.recv(65536))
                if not n:
                    break
                left -= n
        except OSError:
            pass

    def _respond(self, conn: HTTPConnection, req: _Exchange, result: Iterable[bytes]) -> None:
        """Send what the application returned, then close() it."""
        try:
            if type(result) is FileWrapper and req.status is not None and not req.head_sent and \
                    (where := _regular_file(result)) is not None:
                conn.send_file(req, result.filelike, *where)
            elif type(result) is list and req.status is not None and not req.head_sent and \
                    all(type(d) is bytes or type(d) is bytearray for d in result):
                # A list is all there is: one write, with its Content-Length.
                conn.send_all(req, b"".join(result))
            else:
                head_only = req.method == "HEAD"
                for data in result:
                    if type(data) is not bytes:
                        if type(data) is bytearray:  # bytes in all but name (pywsgi takes them)
                            data = bytes(data)
                        else:
                            raise TypeError(f"the application yielded {type(data).__name__}, not bytes")
                    if data:
                        if req.status is None:
                            raise AssertionError("the application yielded a body before start_response()")
                        conn.send_part(req, data)
                        if head_only:
                            break
                if req.status is None:
                    raise AssertionError("the application never called start_response()")
                conn.send_end(req)
        except Exception as e:
            self._failed(conn, req, e)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:
                    self._failed(conn, req, e)

    def _failed(self, conn: HTTPConnection, req: _Exchange, exc: Exception) -> None:
        """The application (or its client) failed this request: answer 500,
        or the client's error, if nothing was sent; else close."""
        req.close = True
        if conn.broken:
            return  # the client went away; nothing to tell anyone
        if isinstance(exc, HTTPError):
            # A bad body, too large, cut short or too slow: the client's fault.
            logger.debug("%s %r: %s", environ_peer(req), req, exc)
            status = exc.status
        else:
            self.app_errors += 1
            self.application_failed(req, exc)
            status = 500
        if not req.head_sent:
            try:
                conn.send_error(req, status)
            except OSError:
                pass

    def application_failed(self, req: Request, exc: BaseException) -> None:
        """The application raised ``exc`` for ``req`` (the client gets a 500
        if nothing was sent yet): log it to ``error_log``.  Override to
        report it elsewhere (gevent.pywsgi's names send it to the hub)."""
        self._log_error(req, exc)

    def _log_error(self, req: Request, exc: BaseException) -> None:
        where = f"{environ_peer(req)} {req.method} {req.target.decode('latin-1')}"
        target = self.error_log
        if target is None or isinstance(target, logging.Logger):
            (target or logger).error("application error on %s", where, exc_info=exc)
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            target.write(f"application error on {where}\n{text}")

    def log_request(self, request: Request, environ: dict[str, Any], duration: float) -> None:
        """Write one access-log line for an answered request (called only
        when ``log`` was given).  The common log format; override for
        another.  ``request`` has ``method``, ``target`` (bytes), ``version``
        ("1.1"), ``headers`` (bytes pairs), ``code`` (the status code sent,
        0 if none), ``status`` (the application's status line),
        ``out_headers`` and ``sent`` (body bytes); ``duration`` is the
        seconds from calling the application to the end of the response."""
        if self.log is None:
            return
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        size = str(request.sent) if request.sent else "-"
        self.log.write(f'{environ.get("REMOTE_ADDR") or "-"} - - [{when}] '
                       f'"{request.method} {environ["RAW_URI"]} HTTP/{request.version}" '
                       f'{request.code or "-"} {size}\n')


def environ_peer(req: Request) -> str:
    try:
        host, port = req.conn.sock.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, ValueError, TypeError):
        return "peer"

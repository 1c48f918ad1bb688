"""``gevent.pywsgi``: greenline's WSGI server under pywsgi's names.

What pywsgi offers besides the server is here too: :class:`Input` (a request
body reader over any binary file, Content-Length or chunked), the environ
classes (:class:`Environ`, :class:`SecureEnviron`, whose ``repr`` hides the
values), :class:`LoggingLogAdapter`, and pywsgi's checks on what an
application passes to ``start_response`` (CR or LF in the status or a
header, a 304 with a body).

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from greenlet import getcurrent

from greenline._core.hub import get_hub
from greenline.wsgi import WSGIServer as _WSGIServer

__all__ = ["Environ", "Input", "LoggingLogAdapter", "MAX_REQUEST_LINE", "SecureEnviron",
           "WSGIHandler", "WSGIServer", "WSGISecureEnviron"]

#: The longest line :class:`Input` reads as a chunk-size line or trailer.
MAX_REQUEST_LINE = 8192


# -- the request body ---------------------------------------------------------


class Input:
    """A request body read from ``rfile`` (any binary file object): at most
    ``content_length`` bytes, or chunked (``chunked_input``).  ``read``,
    ``readline``, ``readlines`` and iteration, as ``wsgi.input`` offers;
    a body cut short (end of file before its length, or a chunk, or the
    last chunk) raises :class:`OSError`."""

    def __init__(self, rfile: Any, content_length: int | None, socket: Any = None,
                 position: int = 0, chunked_input: bool = False) -> None:
        self.rfile = rfile
        self.content_length = content_length
        self.socket = socket
        self.position = position
        self.chunked_input = chunked_input
        self._chunk_left = 0  # bytes of the current chunk not read yet
        self._ended = False  # the last chunk (and its trailers) was read

    # A body that ends early is an error, not an empty read.
    def _short(self) -> OSError:
        return OSError(f"unexpected end of file while reading request at position {self.position}")

    def _left(self) -> int | None:
        """Bytes still to read of a Content-Length body (None: unknown)."""
        if self.content_length is None:
            return None
        return max(self.content_length - self.position, 0)

    def _read_line(self, limit: int) -> bytes:
        line = self.rfile.readline(limit)
        if not line:
            raise OSError("unexpected end of file while parsing chunked data")
        return line

    def _next_chunk(self) -> bool:
        """Start the next chunk; False after the last one."""
        if self._ended:
            return False
        line = self._read_line(MAX_REQUEST_LINE + 1)
        if len(line) > MAX_REQUEST_LINE:
            raise OSError("chunk size line too long")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise OSError(f"invalid chunk size {size_text!r}") from None
        if size < 0:
            raise OSError(f"invalid chunk size {size_text!r}")
        if size == 0:
            # Trailers, if any, end with an empty line.
            while self._read_line(MAX_REQUEST_LINE + 1) not in (b"\r\n", b"\n"):
                pass
            self._ended = True
            return False
        self._chunk_left = size
        return True

    def _end_chunk(self) -> None:
        if self.rfile.read(2) not in (b"\r\n",):
            raise OSError("a chunk does not end with CRLF")

    def _chunked(self, size: int | None, line: bool) -> bytes:
        out = bytearray()
        while size is None or len(out) < size:
            if not self._chunk_left and not self._next_chunk():
                break
            want = self._chunk_left if size is None else min(self._chunk_left, size - len(out))
            data = self.rfile.readline(want) if line else self.rfile.read(want)
            if not data:
                raise OSError("unexpected end of file while parsing chunked data")
            out += data
            self._chunk_left -= len(data)
            self.position += len(data)
            if not self._chunk_left:
                self._end_chunk()
            if line and data.endswith(b"\n"):
                break
        return bytes(out)

    def _plain(self, size: int | None, line: bool) -> bytes:
        left = self._left()
        if left is None:
            left = 0  # no Content-Length: no body
        want = left if size is None or size < 0 else min(size, left)
        if want <= 0:
            return b""
        data = self.rfile.readline(want) if line else self.rfile.read(want)
        self.position += len(data)
        if len(data) < want and not (line and data.endswith(b"\n")):
            raise self._short()
        return data

    def read(self, length: int | None = None) -> bytes:
        if length is not None and length < 0:
            length = None
        if self.chunked_input:
            return self._chunked(length, line=False)
        return self._plain(length, line=False)

    def readline(self, size: int | None = None) -> bytes:
        if size is not None and size < 0:
            size = None
        if self.chunked_input:
            return self._chunked(size, line=True)
        return self._plain(size, line=True)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


# -- environ --------------------------------------------------------------------


class Environ(dict):  # type: ignore[type-arg]
    """An environ dict whose ``copy()`` keeps its class; pickled (or
    ``copy.copy``'d) it is a plain dict."""

    __slots__ = ()

    def copy(self) -> Any:
        return self.__class__(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (dict, (), None, None, iter(self.items()))


class SecureEnviron(Environ):
    """An environ whose ``repr``/``str`` shows only how many keys it has
    (values are credentials, cookies...), unless ``secure_repr`` is false;
    keys in ``whitelist_keys`` are shown, and with ``print_masked_keys``
    the others are shown masked."""

    default_secure_repr = True
    default_whitelist_keys: tuple[str, ...] = ()
    default_print_masked_keys = True

    # Per-instance settings live outside the dict's items.
    __slots__ = ("secure_repr", "whitelist_keys", "print_masked_keys")

    def __getattr__(self, name: str) -> Any:
        if name in SecureEnviron.__slots__:
            return getattr(type(self), "default_" + name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        if self.secure_repr:
            whitelist = self.whitelist_keys
            if whitelist:
                return repr({k: (v if k in whitelist else "<MASKED>") for k, v in self.items()})
            return f"<pywsgi.{type(self).__name__} dict (keys: {len(self)}) at {id(self):#x}>"
        return dict.__repr__(self)

    __str__ = __repr__


WSGISecureEnviron = SecureEnviron


# -- logging --------------------------------------------------------------------


class LoggingLogAdapter:
    """Makes a :mod:`logging` logger (anything with ``log(level, msg)``) a
    file-like ``log=`` target: ``write`` logs at ``level`` without the
    trailing newline; any other attribute is the logger's."""

    def __init__(self, logger: Any, level: int = 20) -> None:
        object.__setattr__(self, "_logger", logger)
        object.__setattr__(self, "_level", level)

    def write(self, msg: str) -> None:
        if msg and msg.endswith("\n"):
            msg = msg[:-1]
        self._logger.log(self._level, msg)

    def flush(self) -> None:
        pass

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._logger, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._logger, name)


def _as_log(target: Any) -> Any:
    if target is None or hasattr(target, "write"):
        return target
    return LoggingLogAdapter(target)


# -- what an application may pass to start_response --------------------------------


def _checked_start_response(start_response: Any) -> Any:
    """pywsgi's checks before greenline's: a status or header with CR or LF
    is a ValueError (greenline refuses it too, but only when the head is
    sent), a 304 may not have a Content-Length or a body."""

    def checked(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if isinstance(status, str) and ("\r" in status or "\n" in status):
            raise ValueError("carriage return or newline in status")
        for item in headers if isinstance(headers, list) else ():
            if isinstance(item, tuple) and len(item) == 2:
                name, value = item
                if isinstance(name, str) and ("\r" in name or "\n" in name):
                    raise ValueError("carriage return or newline in header name")
                if isinstance(value, str) and ("\r" in value or "\n" in value):
                    raise ValueError("carriage return or newline in header value")
        not_modified = isinstance(status, str) and status[:3] == "304"
        if not_modified:
            for name, value in headers:
                if name.lower() == "content-length" and value != "0":
                    raise AssertionError(f"Invalid Content-Length for 304 response: {value!r} "
                                         "(must be absent or zero)")
        write = start_response(status, headers, exc_info)
        if not not_modified:
            return write

        def write_nothing(data: Any) -> None:
            if data:
                raise AssertionError("The 304 response must have no body")
            write(b"")

        return write_nothing

    return checked


class _Checked:
    """An application called with pywsgi's checking ``start_response``."""

    __slots__ = ("__wrapped__",)

    def __init__(self, app: Any) -> None:
        self.__wrapped__ = app

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.__wrapped__(environ, _checked_start_response(start_response))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)


class WSGIServer(_WSGIServer):
    """greenline's WSGI server with pywsgi's signature and habits: requests
    are logged to stderr unless ``log=None``; a ``log``/``error_log`` that
    is a logger is wrapped in :class:`LoggingLogAdapter`; each environ is
    an ``environ_class`` (a dict by default); application errors go to the
    hub's ``handle_error``.  ``handler_class`` is accepted and kept, but
    greenline's server handles each connection itself: a handler
    subclass's overrides are not called (docs/gevent.md)."""

    handler_class: Any = None
    environ_class: Any = dict
    secure_environ_class = SecureEnviron

    def __init__(self, listener: Any, application: Any = None, backlog: int | None = None,
                 spawn: Any = "default", log: Any = "default", error_log: Any = "default",
                 handler_class: Any = None, environ: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        # pywsgi logs requests to stderr unless told log=None.
        if log == "default":
            log = sys.stderr
        if error_log == "default":
            error_log = None
        super().__init__(listener, application, backlog, spawn, _as_log(log), _as_log(error_log),
                         None, environ, **kwargs)
        # pywsgi's server.log is the target itself (greenline's wraps it).
        self.log = _as_log(log)
        if handler_class is not None:
            self.handler_class = handler_class

    @property
    def application(self) -> Any:
        # What the server calls: the application, with pywsgi's checks on
        # start_response (the application itself is ``__wrapped__``).
        return self._checked

    @application.setter
    def application(self, app: Any) -> None:
        self._checked = app if app is None or isinstance(app, _Checked) else _Checked(app)

    def get_environ(self) -> Any:
        env = super().get_environ()
        cls = self.environ_class
        return env if cls is dict else cls(env)

    def handle(self, sock: Any, address: Any) -> None:  # type: ignore[override]
        env = self._env
        if env is not None and type(env) is not self.environ_class:
            self._env = self.get_environ()  # environ_class was set after start()
        super().handle(sock, address)

    def handler_failed(self, address: Any) -> None:
        get_hub().handle_error(getcurrent(), *sys.exc_info())

    def application_failed(self, req: Any, exc: BaseException) -> None:
        # pywsgi reports an application's error to the hub, with the
        # request as context.  The server's own complaints about how the
        # application used WSGI (an AssertionError raised in greenline.wsgi)
        # are the handler class's ApplicationError, as in pywsgi.
        app_error = getattr(self.handler_class, "ApplicationError", None)
        if type(exc) is AssertionError and app_error is not None and app_error is not AssertionError:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None and tb.tb_frame.f_globals.get("__name__") == _WSGIServer.__module__:
                exc = app_error(*exc.args)
        get_hub().handle_error(req, type(exc), exc, exc.__traceback__)


class WSGIHandler:
    """pywsgi's per-connection handler.  greenline's server handles each
    connection itself; subclasses are accepted (gunicorn defines one), their
    methods are not called; their ``ApplicationError`` is the class of the
    errors the server reports when an application misuses WSGI."""

    ApplicationError = AssertionError

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("greenline's WSGIServer has no per-connection handler class")

    def log_request(self) -> None:
        pass

    def _print_unexpected_exc(self) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        return {}

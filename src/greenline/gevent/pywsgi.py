"""``gevent.pywsgi``: greenline's WSGI server under pywsgi's names.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

import sys
from typing import Any

from greenlet import getcurrent

from greenline._core.hub import get_hub
from greenline.wsgi import WSGIServer as _WSGIServer


class WSGIServer(_WSGIServer):
    """greenline's WSGI server with pywsgi's signature.  ``handler_class``
    is accepted and kept as an attribute, but greenline's server handles
    each connection itself: a handler subclass's overrides are not called
    (docs/gevent.md)."""

    handler_class: Any = None

    def __init__(self, listener: Any, application: Any = None, backlog: int | None = None,
                 spawn: Any = "default", log: Any = "default", error_log: Any = "default",
                 handler_class: Any = None, environ: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        # pywsgi logs requests to stderr unless told log=None.
        if log == "default":
            log = sys.stderr
        if error_log == "default":
            error_log = None
        super().__init__(listener, application, backlog, spawn, log, error_log, None, environ,
                         **kwargs)
        if handler_class is not None:
            self.handler_class = handler_class

    def handler_failed(self, address: Any) -> None:
        get_hub().handle_error(getcurrent(), *sys.exc_info())

    def application_failed(self, req: Any, exc: BaseException) -> None:
        # pywsgi reports an application's error to the hub, with the
        # request as context.
        get_hub().handle_error(req, type(exc), exc, exc.__traceback__)


class WSGIHandler:
    """pywsgi's per-connection handler.  greenline's server handles each
    connection itself; subclasses are accepted (gunicorn defines one) and
    their ``handler_class`` is ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("greenline's WSGIServer has no per-connection handler class")

    def log_request(self) -> None:
        pass

    def _print_unexpected_exc(self) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        return {}


class Input:
    """pywsgi's request-body reader.  greenline's server reads bodies in
    :mod:`greenline.wsgi`; this name exists for imports only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("greenline's wsgi.input is greenline.wsgi's own reader")


class Environ(dict):  # type: ignore[type-arg]
    """pywsgi's environ class: a plain dict here."""


SecureEnviron = WSGISecureEnviron = Environ


class LoggingLogAdapter:
    """Wraps a :mod:`logging` logger as a file-like ``log=`` target."""

    def __init__(self, logger: Any, level: int = 20) -> None:
        self._logger = logger
        self._level = level

    def write(self, msg: str) -> None:
        if msg and msg.endswith("\n"):
            msg = msg[:-1]
        self._logger.log(self._level, msg)

    def flush(self) -> None:
        pass

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)


__all__ = ["Environ", "Input", "LoggingLogAdapter", "SecureEnviron", "WSGIHandler", "WSGIServer",
           "WSGISecureEnviron"]

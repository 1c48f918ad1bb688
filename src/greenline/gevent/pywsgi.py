"""``gevent.pywsgi``: greenline's WSGI server under pywsgi's names.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

from typing import Any

from greenline.wsgi import WSGIServer


class WSGIHandler:
    """pywsgi's per-connection handler.  greenline's server handles each
    connection itself; subclasses are accepted (gunicorn defines one) and
    their ``handler_class`` is ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("greenline's WSGIServer has no per-connection handler class")

    def log_request(self) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        return {}


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


__all__ = ["LoggingLogAdapter", "WSGIHandler", "WSGIServer"]

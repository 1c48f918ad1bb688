"""``gevent.server``: ``StreamServer`` and ``DatagramServer``.

They are greenline's, except that a handler's failure goes where gevent
sends it: to the hub's ``handle_error`` (printed, unless the program
replaced it), not to the ``greenline.server`` logger.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

import sys
from typing import Any

from greenlet import getcurrent

from greenline._core.hub import get_hub
from greenline.servers.datagram import DatagramServer
from greenline.servers.stream import StreamServer as _StreamServer


class StreamServer(_StreamServer):
    """greenline's stream server, reporting handler failures to the hub;
    as gevent's, it refuses a ``backlog`` with a socket that already
    listens, and its ``repr`` names the handle."""

    def __init__(self, listener: Any, handle: Any = None, backlog: int | None = None,
                 spawn: Any = "default", **kwargs: Any) -> None:
        if backlog is not None and hasattr(listener, "accept"):
            raise TypeError("backlog must be None when a socket instance is passed")
        super().__init__(listener, handle, backlog, spawn, **kwargs)

    def handler_failed(self, address: Any) -> None:
        get_hub().handle_error(getcurrent(), *sys.exc_info())

    def __repr__(self) -> str:
        handle = self.__dict__.get("handle")
        if handle is None:
            return super().__repr__()
        if getattr(handle, "__self__", None) is self:
            # A method of the server itself: its repr would recurse.
            shown = f"<bound method {type(self).__name__}.{handle.__name__} of self>"
        else:
            shown = repr(handle)
        return super().__repr__()[:-1] + f" handle={shown}>"


__all__ = ["DatagramServer", "StreamServer"]

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
    """greenline's stream server, reporting handler failures to the hub."""

    def handler_failed(self, address: Any) -> None:
        get_hub().handle_error(getcurrent(), *sys.exc_info())


__all__ = ["DatagramServer", "StreamServer"]

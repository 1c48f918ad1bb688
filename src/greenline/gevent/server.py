"""``gevent.server``: ``StreamServer`` and ``DatagramServer``.

May import: greenline's modules, not the tools.
"""

from greenline.servers.datagram import DatagramServer
from greenline.servers.stream import StreamServer

__all__ = ["DatagramServer", "StreamServer"]

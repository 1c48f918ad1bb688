"""``gevent.baseserver``: what gevent's servers share (greenline's stream
server is the base).

May import: greenline's modules, not the tools.
"""

from greenline.gevent.server import StreamServer as BaseServer

__all__ = ["BaseServer"]

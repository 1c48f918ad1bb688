"""``gevent.event``: ``Event`` and ``AsyncResult``.

May import: greenline's modules, not the tools.
"""

from greenline.event import AsyncResult, Event

__all__ = ["AsyncResult", "Event"]

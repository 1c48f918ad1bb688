"""``gevent.greenlet``: ``Greenlet`` is greenline's :class:`~greenline.Task`.

May import: greenline's modules, not the tools.
"""

from greenlet import GreenletExit

from greenline._core.task import Task, joinall, killall

Greenlet = Task

__all__ = ["Greenlet", "GreenletExit", "joinall", "killall"]

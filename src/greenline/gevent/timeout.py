"""``gevent.timeout``: ``Timeout`` and ``with_timeout``.

May import: greenline's modules, not the tools.
"""

from greenline._core.timeout import Timeout, with_timeout

__all__ = ["Timeout", "with_timeout"]

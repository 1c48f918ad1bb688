"""``gevent.local``: green-thread-local storage.

May import: greenline's modules, not the tools.
"""

from greenline.local import local

__all__ = ["local"]

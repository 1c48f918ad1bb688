"""Deadlines the gevent way: ``Timeout`` and ``with_timeout``.

>>> from greenline.timeout import Timeout
>>> import greenline
>>> with Timeout(0.01, False):   # False: leave the block quietly when it fires
...     greenline.sleep(1)

This is the public path gevent ports import; the implementation belongs to
the runtime (:mod:`greenline._core.timeout`), because joins, waits and the
cancel scopes are built on it.
"""

from greenline._core.timeout import Timeout, with_timeout

__all__ = ["Timeout", "with_timeout"]

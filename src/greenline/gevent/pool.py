"""``gevent.pool``: ``Pool`` and ``Group``.

May import: greenline's modules, not the tools.
"""

from greenline.pool import Group, IMap, Pool, PoolFull

__all__ = ["Group", "IMap", "Pool", "PoolFull"]

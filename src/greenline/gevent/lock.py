"""``gevent.lock``: semaphores and locks.

May import: greenline's modules, not the tools.
"""

from greenline.lock import BoundedSemaphore, DummySemaphore, RLock, Semaphore
from greenline.lock import Lock as _Lock

RLock = RLock
Semaphore = Semaphore
BoundedSemaphore = BoundedSemaphore
DummySemaphore = DummySemaphore
# gevent's lock.RLock/Semaphore names; ``gevent.lock.Lock`` is its
# ``threading``-compatible lock.
Lock = _Lock

__all__ = ["BoundedSemaphore", "DummySemaphore", "Lock", "RLock", "Semaphore"]

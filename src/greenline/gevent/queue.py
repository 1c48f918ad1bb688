"""``gevent.queue``: queues between green threads.

May import: greenline's modules, not the tools.
"""

from queue import Empty, Full

from greenline.queue import JoinableQueue, LifoQueue, PriorityQueue, Queue

__all__ = ["Empty", "Full", "JoinableQueue", "LifoQueue", "PriorityQueue", "Queue"]

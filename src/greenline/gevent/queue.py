"""``gevent.queue``: queues between green threads.

May import: greenline's modules, not the tools.
"""

from queue import Empty, Full

from greenline.queue import (
    Channel,
    JoinableQueue,
    LifoQueue,
    PriorityQueue,
    Queue,
    ShutDown,
    SimpleQueue,
)

__all__ = ["Channel", "Empty", "Full", "JoinableQueue", "LifoQueue", "PriorityQueue", "Queue",
           "ShutDown", "SimpleQueue"]

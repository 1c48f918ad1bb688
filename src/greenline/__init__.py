"""greenline: green threads for Python.

Write plain blocking code, one green thread per job; greenline switches
wherever that code would block and runs thousands of them in one OS thread.

>>> import greenline
>>> tasks = [greenline.spawn(greenline.sleep, 0.05) for _ in range(1000)]
>>> len(greenline.joinall(tasks))   # in about 0.05 s, not 50
1000
"""

from typing import TYPE_CHECKING

from greenlet import GreenletExit, getcurrent

from greenline._core import watchdog as _watchdog  # noqa: F401 - reads GREENLINE_BLOCK_WARN_MS
from greenline._core.cancel import (
    Cancelled,
    CancelScope,
    TooSlowError,
    current_cancel_scope,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
)
from greenline._core.hub import Hub, LoopExit, get_hub, sleep, stats
from greenline._core.task import Task, joinall, killall, spawn, spawn_later
from greenline._core.taskgroup import TaskGroup
from greenline._core.threadpool import to_thread
from greenline.event import AsyncResult, Event
from greenline.local import local
from greenline.lock import BoundedSemaphore, Lock, RLock, Semaphore
from greenline.pool import Group, Pool
from greenline.queue import JoinableQueue, LifoQueue, PriorityQueue, Queue
from greenline.timeout import Timeout, with_timeout

if TYPE_CHECKING:
    from greenline.servers.stream import StreamServer

__version__ = "0.1.0"

# Submodules reachable as attributes without importing them all up front
# (``import greenline; greenline.monkey.patch_all()``).
# ``greenline.watchdog.enable(100)`` and ``greenline.threadpool`` keep working
# though both now live in the runtime package.
_LAZY = {
    "monkey": "greenline.monkey",
    "socket": "greenline.socket",
    "ssl": "greenline.ssl",
    "select": "greenline.select",
    "selectors": "greenline.selectors",
    "subprocess": "greenline.subprocess",
    "aio": "greenline.aio",
    "servers": "greenline.servers",
    "threadpool": "greenline._core.threadpool",
    "watchdog": "greenline._core.watchdog",
}


def __getattr__(name: str) -> object:
    if name == "StreamServer":  # imports logging: only for those who serve
        from greenline.servers.stream import StreamServer

        return StreamServer
    if name in _LAZY:
        import importlib

        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'greenline' has no attribute {name!r}")


__all__ = [
    "AsyncResult",
    "CancelScope",
    "Cancelled",
    "TaskGroup",
    "TooSlowError",
    "current_cancel_scope",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "BoundedSemaphore",
    "Event",
    "GreenletExit",
    "Group",
    "Hub",
    "JoinableQueue",
    "LifoQueue",
    "Lock",
    "LoopExit",
    "Pool",
    "PriorityQueue",
    "Queue",
    "RLock",
    "Semaphore",
    "StreamServer",
    "Task",
    "Timeout",
    "get_hub",
    "getcurrent",
    "joinall",
    "killall",
    "local",
    "sleep",
    "spawn",
    "spawn_later",
    "stats",
    "to_thread",
    "with_timeout",
]

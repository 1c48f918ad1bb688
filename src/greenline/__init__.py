"""greenline: green threads for Python.

Write plain blocking code, one green thread per job; greenline switches
wherever that code would block and runs thousands of them in one OS thread.

>>> import greenline
>>> tasks = [greenline.spawn(greenline.sleep, 0.05) for _ in range(1000)]
>>> len(greenline.joinall(tasks))   # in about 0.05 s, not 50
1000
"""

from greenlet import GreenletExit, getcurrent

from greenline.hub import Hub, LoopExit, get_hub, sleep
from greenline.task import Task, joinall, killall, spawn, spawn_later
from greenline.threadpool import to_thread
from greenline.timeout import Timeout, with_timeout

__version__ = "0.1.0"

__all__ = [
    "GreenletExit",
    "Hub",
    "LoopExit",
    "Task",
    "Timeout",
    "get_hub",
    "getcurrent",
    "joinall",
    "killall",
    "sleep",
    "spawn",
    "spawn_later",
    "to_thread",
    "with_timeout",
]

"""gevent's API, module for module, on greenline: what ``import gevent``
gives a program run with ``greenline run --as-gevent``.

Each module here stands for the gevent module of the same name
(``greenline.gevent.pool`` is ``gevent.pool``) and only gathers greenline's
own implementations under gevent's names; the import hook
(:mod:`.importhook`) makes ``gevent`` and ``gevent.X`` resolve to these.
``__version__`` names the gevent release whose API this matches.  Where
gevent's behaviour is a bug, greenline keeps its own (docs/gevent.md lists
every difference).

May import: everything in greenline except the tools.  Nothing else in
greenline imports this package.
"""

from __future__ import annotations

from typing import Any

from greenlet import GreenletExit, getcurrent

from greenline._core.hub import get_hub, sleep
from greenline._core.task import Task, joinall, kill, killall, spawn, spawn_later, spawn_raw
from greenline._core.timeout import Timeout, with_timeout
from greenline._core.wait import idle, iwait, wait
from greenline.blocking.os import fork
from greenline.blocking.signal import signal_handler

#: The gevent release whose API this package follows.
__version__ = "26.9.0"
version_info = (26, 9, 0, "final", 0)

Greenlet = Task
signal = signal_handler


def reinit(hub: Any = None) -> None:
    """Nothing to do: greenline's hub starts afresh in a forked child by
    itself (``os.register_at_fork``)."""


def getswitchinterval() -> float:
    import sys

    return sys.getswitchinterval()


def setswitchinterval(interval: float) -> None:
    """Accepted and ignored: a green thread runs until it blocks or spends
    its IO budget; there is no timer-driven switch to tune."""


class _Config:
    """``gevent.config``: settings greenline has no use for are kept and
    ignored, so programs that set them still run."""

    def __init__(self) -> None:
        self.__dict__.update(resolver="thread", loop="greenline", threadpool_idle_task_timeout=5.0,
                             monitor_thread=False, max_blocking_time=0.1, track_greenlet_tree=True)

    def set(self, name: str, value: Any) -> None:
        setattr(self, name, value)


config = _Config()

__all__ = [
    "Greenlet", "GreenletExit", "Timeout", "config", "fork", "get_hub", "getcurrent",
    "getswitchinterval", "idle", "iwait", "joinall", "kill", "killall", "reinit",
    "setswitchinterval", "signal", "signal_handler", "sleep", "spawn", "spawn_later",
    "spawn_raw", "wait", "with_timeout",
]

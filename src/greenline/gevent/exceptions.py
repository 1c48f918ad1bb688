"""``gevent.exceptions``: the errors gevent raises, as greenline's.

May import: greenline's modules, not the tools.
"""

from greenline._core.hub import LoopExit
from greenline._core.workers import InvalidThreadUseError


class BlockingSwitchOutError(AssertionError):
    """A switch out of a green thread where that is not allowed."""


class InvalidSwitchError(AssertionError):
    """A green thread was switched into by the wrong waker."""


class ConcurrentObjectUseError(AssertionError):
    """Two green threads used an object that allows one at a time."""


class HubDestroyed(BaseException):
    """The hub was destroyed while a green thread waited on it."""


__all__ = ["BlockingSwitchOutError", "ConcurrentObjectUseError", "HubDestroyed",
           "InvalidSwitchError", "InvalidThreadUseError", "LoopExit"]

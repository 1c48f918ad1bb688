"""``gevent.exceptions``: the errors gevent raises, as greenline's.

May import: greenline's modules, not the tools.
"""

from greenline._core.hub import LoopExit


class BlockingSwitchOutError(AssertionError):
    """A switch out of a green thread where that is not allowed."""


class InvalidSwitchError(AssertionError):
    """A green thread was switched into by the wrong waker."""


class ConcurrentObjectUseError(AssertionError):
    """Two green threads used an object that allows one at a time."""


class InvalidThreadUseError(RuntimeError):
    """An object was used from an OS thread it does not belong to."""


class HubDestroyed(BaseException):
    """The hub was destroyed while a green thread waited on it."""


__all__ = ["BlockingSwitchOutError", "ConcurrentObjectUseError", "HubDestroyed",
           "InvalidSwitchError", "InvalidThreadUseError", "LoopExit"]

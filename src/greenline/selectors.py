"""Cooperative ``selectors``: the standard library's selector classes, with
their kernel calls replaced by :mod:`greenline.select`'s, so ``select()``
parks only the calling green thread.

>>> from greenline import selectors, socket
>>> a, b = socket.socketpair()
>>> sel = selectors.DefaultSelector()
>>> key = sel.register(a, selectors.EVENT_READ)
>>> sel.select(0)
[]
>>> b.sendall(b"x")
>>> [k.fileobj is a for k, _ in sel.select(1)]
[True]
>>> sel.close(); a.close(); b.close()

Everything else (keys, ``register``/``modify``/``get_map``) is inherited
unchanged, so behaviour matches the stdlib's selector of the same name.
"""

from __future__ import annotations

import selectors as _std
from selectors import (  # noqa: F401 - re-exported, a drop-in for the stdlib module
    EVENT_READ,
    EVENT_WRITE,
    BaseSelector,
    SelectorKey,
)

from greenline import select as _green

__all__ = ["BaseSelector", "SelectorKey", "EVENT_READ", "EVENT_WRITE",
           "SelectSelector", "PollSelector", "DefaultSelector"]


class SelectSelector(_std.SelectSelector):
    """:class:`selectors.SelectSelector` over :func:`greenline.select.select`."""

    _select = staticmethod(_green.select)  # type: ignore[assignment]


class PollSelector(_std.PollSelector):
    """:class:`selectors.PollSelector` over :class:`greenline.select.poll`."""

    # staticmethod: a Python function kept as a class attribute would bind.
    _selector_cls = staticmethod(_green.poll)  # type: ignore[assignment]


DefaultSelector: type[_std.BaseSelector]

if hasattr(_green, "epoll") and hasattr(_std, "EpollSelector"):

    class EpollSelector(_std.EpollSelector):
        """:class:`selectors.EpollSelector` over :class:`greenline.select.epoll`."""

        _selector_cls = _green.epoll  # type: ignore[attr-defined]

    DefaultSelector = EpollSelector
    __all__.append("EpollSelector")
else:  # pragma: no cover - platforms without epoll
    DefaultSelector = PollSelector

"""``patch_multiprocessing``: a green thread waiting on another process
parks instead of blocking the hub.

``multiprocessing``'s connections (``Pipe``, ``Queue``, a ``Pool``'s
channels) read and write only when the hub reports the descriptor ready;
its process-shared locks are acquired by polling with green sleeps, as they
have no descriptor to wait on.

May import: :mod:`.originals`, greenline's public modules and ``_core``.
"""

from __future__ import annotations

import sys
from typing import Any

from greenline._core.fdio import read_when_ready, write_all
from greenline.monkey.originals import patched, saved

__all__ = ["patch_multiprocessing"]


def patch_multiprocessing() -> None:
    """``multiprocessing`` connections (``Pipe``, ``Queue``, ``Pool``'s
    channels) read and write only when the hub reports the descriptor ready,
    so a green thread waiting for a message from another process (a Pool's
    result handler, a feeder thread) parks instead of blocking the hub."""
    if sys.platform == "win32":  # pragma: no cover
        return
    import multiprocessing.connection as conn

    cls: Any = conn.Connection
    # Saved once, so patching again wraps the originals, not our wrappers.
    originals = saved.setdefault("multiprocessing.connection", {})
    send = originals.setdefault("Connection._send", cls._send)
    recv = originals.setdefault("Connection._recv", cls._recv)

    # The stdlib's loops take the read/write calls as arguments: hand them
    # cooperative ones, keep its framing and EOF handling.
    def _send(self: Any, buf: Any, write: Any = write_all) -> None:
        send(self, buf, write)

    def _recv(self: Any, size: int, read: Any = read_when_ready) -> Any:
        return recv(self, size, read)

    cls._send = _send
    cls._recv = _recv

    try:
        import multiprocessing.synchronize as msync
    except ImportError:  # pragma: no cover - no working sem_open on this system
        pass
    else:
        semlock: Any = msync.SemLock
        originals = saved.setdefault("multiprocessing.synchronize", {})
        make_methods = originals.setdefault("SemLock._make_methods", semlock._make_methods)

        def _make_methods_green(self: Any) -> None:
            make_methods(self)
            self.acquire = _GreenSemAcquire(self._semlock)

        def _enter_green(self: Any) -> bool:
            return self.acquire()  # type: ignore[no-any-return]

        originals.setdefault("SemLock.__enter__", semlock.__enter__)
        semlock._make_methods = _make_methods_green
        semlock.__enter__ = _enter_green
    patched.add("multiprocessing")


class _GreenSemAcquire:
    """``acquire`` of a multiprocessing lock/semaphore that parks only the
    calling green thread.

    A process-shared semaphore has no descriptor to wait on, and blocking in
    ``sem_wait`` would stop every green thread, including the one that holds
    the lock and would release it (multiprocessing's Pool and Queue hold
    their locks across reads).  So: try without blocking, then retry after
    green sleeps that grow to 20 ms.
    """

    __slots__ = ("_try",)

    def __init__(self, semlock: Any) -> None:
        self._try = semlock.acquire

    def __call__(self, block: bool = True, timeout: float | None = None) -> bool:
        if self._try(False):
            return True
        if not block:
            return False
        from time import monotonic

        from greenline._core.hub import sleep

        deadline = None if timeout is None else monotonic() + max(0.0, timeout)
        delay = 0.0005
        while True:
            if deadline is not None:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return False
                sleep(min(delay, remaining))
            else:
                sleep(delay)
            if self._try(False):
                return True
            delay = min(delay * 2, 0.02)

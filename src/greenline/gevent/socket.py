"""``gevent.socket``: greenline's cooperative ``socket`` module.

Once ``socket`` is monkey-patched, ``create_connection`` here is the very
function the patching installed (``socket.create_connection is
gevent.socket.create_connection``, as with gevent).

May import: greenline's modules, not the tools.
"""

from typing import Any

from greenline._core.fdio import wait_read, wait_write  # noqa: F401 - gevent.socket has them
from greenline.socket import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.socket import __all__  # noqa: F401
from greenline.socket import timeout as _timeout_error  # noqa: E402

globals().pop("create_connection")  # __getattr__ gives it


def __getattr__(name: str) -> Any:
    if name == "create_connection":
        import socket as _stdlib_socket

        from greenline import socket as _green
        from greenline.monkey import is_module_patched

        if is_module_patched("socket"):
            return _stdlib_socket.create_connection
        return _green.create_connection
    raise AttributeError(f"module 'gevent.socket' has no attribute {name!r}")


_NONE: Any = object()


def wait(io: Any, timeout: float | None = None, timeout_exc: Any = _NONE) -> None:
    """gevent's ``socket.wait``: start the watcher ``io`` (a loop watcher,
    ``get_hub().loop.io(fd, events)``) and block until it calls back, or
    raise ``timeout_exc`` (``socket.timeout`` by default) after ``timeout``
    seconds."""
    from greenlet import getcurrent

    from greenline._core.hub import get_hub
    from greenline._core.timeout import Timeout

    if getattr(io, "callback", None) is not None:
        raise ValueError("This socket is already used by another greenlet")
    if timeout_exc is _NONE:
        timeout_exc = _timeout_error("timed out")
    hub = get_hub()
    g = getcurrent()
    woken: list[bool] = []

    def wake(*_args: Any) -> None:
        woken.append(True)
        hub.wake(g)

    t = Timeout.start_new(timeout, timeout_exc)
    try:
        io.start(wake)
        while not woken:
            hub.block()
    finally:
        t.cancel()
        stop = getattr(io, "stop", None)
        if stop is not None:
            stop()

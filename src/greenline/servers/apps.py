"""Connection handlers for ``greenline serve``, and loading a user's own.

An app is a function ``handle(sock, address)`` that serves one connection in
its own green thread with plain blocking calls; the server closes the socket
when it returns.  Built in:

``upper``
    the seed's protocol: every byte received is sent back upper-cased
    (``bytes.upper``: ASCII letters only), no framing.
``echo``
    every byte received is sent back as it is.

Any other APP is ``package.module:function`` (``function`` may be a dotted
path inside the module).  Only the module named is imported.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["upper", "echo", "BUILTIN_APPS", "load_app", "AppError"]

# Big enough that one call takes whatever a client has sent (fewer system
# calls, and a short read tells the socket the buffer is drained).
RECV_SIZE = 65536


def upper(sock: Any, address: Any) -> None:
    """Send back every byte received, upper-cased, until the client closes."""
    # This loop is the hot path of the benchmark.  Method calls need no
    # cached bound methods (the interpreter calls them without making one),
    # and ``del`` keeps the last message from living on, per connection,
    # through the wait for the next one.
    while True:
        data = sock.recv(RECV_SIZE)
        if not data:
            return
        sock.sendall(data.upper())
        del data


def echo(sock: Any, address: Any) -> None:
    """Send back every byte received, until the client closes."""
    while True:
        data = sock.recv(RECV_SIZE)
        if not data:
            return
        sock.sendall(data)
        del data


BUILTIN_APPS: dict[str, Callable[[Any, Any], object]] = {"upper": upper, "echo": echo}


class AppError(ValueError):
    """The APP spec names nothing that can serve a connection."""


def load_app(spec: str) -> Callable[[Any, Any], object]:
    """The handler an APP spec names: a built-in name or ``module:function``.

    The current directory is searched last (after the installed packages, so
    a stray file there cannot shadow one), as a user running ``greenline
    serve myapp:handle`` next to ``myapp.py`` expects.
    """
    builtin = BUILTIN_APPS.get(spec)
    if builtin is not None:
        return builtin
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        names = ", ".join(sorted(BUILTIN_APPS))
        raise AppError(f"APP must be one of {names} or package.module:function, not {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise AppError(f"cannot import {module_name!r}: {e}") from e
        raise
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise AppError(f"{spec!r} is not callable")
    return obj  # type: ignore[no-any-return]

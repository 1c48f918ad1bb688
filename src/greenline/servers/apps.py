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
import traceback
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
    """The APP spec names nothing that can serve a connection, or the module
    it names fails to import (the message says where: file and line)."""


# Files whose frames are the import machinery's, not the user's code.
_MACHINERY = {__file__, importlib.__file__}


def _where(e: BaseException) -> str:
    """``file, line N`` of what went wrong in the user's code: the
    position of a syntax error, else the innermost frame of the traceback
    that is not the import machinery's."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}, line {e.lineno}"
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<frozen ") and f.filename not in _MACHINERY]
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename}, line {last.lineno}"


def _describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        what = f"{type(e).__name__}: {e.msg}"
    else:
        what = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()[-1]
    where = _where(e)
    return f"{what} ({where})" if where else what


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
        if e.name and module_name.startswith(e.name) and not _where(e):
            raise AppError(f"cannot import {module_name!r}: {e}") from e
        raise AppError(f"cannot import {module_name!r}: {_describe(e)}") from e
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as e:
        # A syntax error, an import inside the module that fails, or any
        # exception (SystemExit included) while the module runs: the user's
        # code is broken, and one line saying where is what helps.
        raise AppError(f"cannot import {module_name!r}: {_describe(e)}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise AppError(f"{spec!r} is not callable")
    return obj  # type: ignore[no-any-return]

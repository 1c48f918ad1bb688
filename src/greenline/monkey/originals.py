"""What patching replaced, kept once, and how a replacement is installed.

Every ``patch_*`` function goes through :func:`replace`, which saves the
original the first time (so patching twice is harmless and
:func:`get_original` always answers with the standard library's own), and
records what was patched for :func:`is_module_patched`.

May import: the standard library only.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = [
    "MonkeyPatchWarning", "MISSING", "saved", "patched", "replace", "warn", "builtin_like",
    "is_module_patched", "is_anything_patched", "is_object_patched", "get_original",
]


class MonkeyPatchWarning(RuntimeWarning):
    """Patching came too late to cover everything (see the message)."""


MISSING: Any = object()
# module name -> {attribute: the original value, or MISSING if there was none}
saved: dict[str, dict[str, Any]] = {}
# Names of what was patched (the keys patch_all takes: "socket", "thread"...).
patched: set[str] = set()


def replace(module: ModuleType, name: str, value: Any) -> None:
    originals = saved.setdefault(module.__name__, {})
    if name not in originals:
        originals[name] = getattr(module, name, MISSING)
    if value is MISSING:
        if hasattr(module, name):
            delattr(module, name)
    else:
        setattr(module, name, value)


def warn(message: str) -> None:
    # Point at the caller's patch_all()/patch_X() line, not at this package.
    level = 2  # 1 is this function, 2 its caller
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("greenline.monkey"):
        level += 1
        frame = frame.f_back
    warnings.warn(message, MonkeyPatchWarning, stacklevel=level)


class BuiltinLike:
    """Stands in for a C function of the stdlib (``time.sleep``,
    ``select.select``...) the way that function behaves: it does not turn into
    a method when code keeps it as a class attribute (``class Poller: wait =
    select.select``), it pickles by reference under the stdlib's name (a
    ``multiprocessing`` target of ``time.sleep`` reaches the child as
    ``time.sleep``, patched or not there), and, having no ``__dict__``,
    serializers that refuse functions refuse it too (xmlrpc would send an
    object with a ``__dict__`` as a struct).  Each replacement is an instance
    of its own subclass, whose ``__module__`` is the stdlib module's."""

    __slots__ = ("__wrapped__", "__name__", "__qualname__")
    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __reduce__(self) -> str:
        return self.__qualname__

    def __repr__(self) -> str:
        return f"<greenline replacement for {self.__module__}.{self.__name__}>"


def builtin_like(fn: Callable[..., Any], module: str, name: str) -> Any:
    """One :class:`BuiltinLike` per function, so patching twice installs
    the same object."""
    wrapped = _builtin_likes.get(fn)
    if wrapped is None:
        cls = type(name, (BuiltinLike,), {"__module__": module, "__slots__": (), "__doc__": fn.__doc__})
        wrapped = cls()
        wrapped.__wrapped__ = fn
        wrapped.__name__ = wrapped.__qualname__ = name
        _builtin_likes[fn] = wrapped
    return wrapped


_builtin_likes: dict[Callable[..., Any], Any] = {}


def is_module_patched(name: str) -> bool:
    """True if ``name`` (a module, e.g. ``"socket"``, or a patch_all keyword)
    has been patched."""
    return name in patched or name in saved


def is_anything_patched() -> bool:
    """Whether any part of the standard library has been patched."""
    return bool(patched) or bool(saved)


def is_object_patched(mod_name: str, item_name: str) -> bool:
    """True if ``mod_name.item_name`` was replaced by patching."""
    return item_name in saved.get(mod_name, {})


def get_original(mod_name: str, item_name: str | list[str] | tuple[str, ...]) -> Any:
    """The original ``mod_name.item_name`` before patching (the current one
    if it was never patched).  A list of names gives a list of values."""
    if isinstance(item_name, (list, tuple)):
        return [get_original(mod_name, n) for n in item_name]
    originals = saved.get(mod_name, {})
    if item_name in originals:
        value = originals[item_name]
        if value is MISSING:
            raise AttributeError(f"module {mod_name!r} had no attribute {item_name!r} before patching")
        return value
    return getattr(importlib.import_module(mod_name), item_name)

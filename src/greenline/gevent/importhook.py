"""The import hook behind ``greenline run --as-gevent``: ``import gevent``
and every ``gevent.X`` resolve to :mod:`greenline.gevent` and its modules.

A meta-path finder placed first on ``sys.meta_path`` answers for the name
``gevent`` and everything under it, so an installed gevent is never found,
let alone imported.  ``gevent.X`` is the very module object
``greenline.gevent.X`` (``sys.modules`` holds it under both names), so
state set through one name is seen through the other.  A ``gevent.X`` that
greenline does not provide fails with ``ModuleNotFoundError`` naming it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["GeventFinder", "install", "uninstall"]

_PREFIX = "gevent"
_TARGET = "greenline.gevent"


class _AliasLoader(importlib.abc.Loader):
    """Hands the import system the greenline module itself."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # Already executed under its own name by import_module above.
        pass


class GeventFinder(importlib.abc.MetaPathFinder):
    """Finds ``gevent`` and ``gevent.*`` among greenline's compatible modules."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _PREFIX and not fullname.startswith(_PREFIX + "."):
            return None
        name = _TARGET + fullname[len(_PREFIX):]
        if importlib.util.find_spec(name) is None:  # type: ignore[attr-defined]
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (greenline --as-gevent provides no {name})",
                name=fullname)
        is_package = fullname == _PREFIX or _is_package(name)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(name), is_package=is_package)


def _is_package(name: str) -> bool:
    spec: Any = importlib.util.find_spec(name)  # type: ignore[attr-defined]
    return spec is not None and spec.submodule_search_locations is not None


_finder = GeventFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once) and forget any gevent
    module imported before, so none of the real gevent's can leak in."""
    import importlib.util  # noqa: F401 - find_spec lives there

    for name in [n for n in sys.modules if n == _PREFIX or n.startswith(_PREFIX + ".")]:
        mod = sys.modules[name]
        if not getattr(mod, "__name__", "").startswith(_TARGET):
            del sys.modules[name]
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)

"""``gevent.util``: ``wrap_errors`` and the run-info helpers programs call.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["wrap_errors", "format_run_info", "print_run_info", "GreenletTree"]


class wrap_errors:
    """Call ``func``, returning (not raising) the exceptions of ``errors``:
    for a green thread whose expected failure is its result."""

    def __init__(self, errors: Any, func: Callable[..., Any]) -> None:
        self.__errors = errors
        self.__func = func
        self.__name__ = getattr(func, "__name__", "wrap_errors")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.__func(*args, **kwargs)
        except self.__errors as ex:
            return ex

    def __str__(self) -> str:
        return str(self.__func)

    def __repr__(self) -> str:
        return repr(self.__func)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__func, name)


def format_run_info(thread_stacks: bool = True, greenlet_stacks: bool = True,
                    limit: Any = None, current_thread_ident: Any = None) -> list[str]:
    """Stacks of the OS threads (greenline keeps no tree of greenlets)."""
    import sys

    lines = []
    for ident, frame in sys._current_frames().items():
        lines.append(f"Thread {ident}:\n")
        lines.extend(traceback.format_stack(frame, limit))
    return lines


def print_run_info(thread_stacks: bool = True, greenlet_stacks: bool = True, limit: Any = None,
                   file: Any = None) -> None:
    import sys

    for line in format_run_info(thread_stacks, greenlet_stacks, limit):
        print(line, file=file or sys.stderr, end="")


class GreenletTree:
    @classmethod
    def current_tree(cls) -> GreenletTree:
        return cls()

    def format(self, details: Any = True) -> str:
        return ""

"""``gevent.thread``: the green ``_thread`` names.

May import: greenline's modules, not the tools.
"""

from greenline.monkey.green_thread import (
    LockType,
    allocate_lock,
    error,
    exit,
    get_ident,
    stack_size,
    start_new_thread,
)

__all__ = ["LockType", "allocate_lock", "error", "exit", "get_ident", "start_new_thread",
           "stack_size"]

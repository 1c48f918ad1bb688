"""Make the standard library cooperative: ``monkey.patch_all()``.

>>> from greenline import monkey
>>> monkey.patch_all()          # doctest: +SKIP

Call it first thing in the program, before other imports: after it,
``socket``, ``ssl``, ``time.sleep``, ``select``, ``selectors``,
``threading``/``_thread``, ``queue``, ``subprocess``, ``os.waitpid``,
``os.read``/``os.write``, ``signal.signal`` and ``multiprocessing``'s pipes and locks are
greenline's, so plain blocking code (a thread per client, ``sock.recv()``,
``time.sleep()``) runs as green threads that switch wherever they would
block.  ``threading.Thread(...).start()`` starts a green thread; locks,
conditions, events, semaphores, barriers, timers and thread-locals follow,
and at exit the interpreter waits for non-daemon green threads as it does
for real ones.

What stays different from real threads: a green thread that never blocks
(a pure-Python busy loop) is not preempted; ``threading.get_native_id()`` is
the OS thread's for every green thread; an asyncio event loop runs one per
OS thread at a time.

Or run an unmodified program patched::

    python -m greenline.monkey script.py ARGS...
    python -m greenline.monkey --module package.module ARGS...

Patching twice is harmless (the originals are saved once; see
:func:`get_original`).  Patching a module that was already used in a way the
patch cannot reach (real threads already running; ``ssl`` contexts already
made, or ``SSLContext`` imported by name elsewhere) warns with
:class:`MonkeyPatchWarning`, naming the module.

Patching never imports gevent or eventlet.

The package, by concern: :mod:`.originals` (what was replaced, kept once),
:mod:`.stdlib` (sockets, ssl, select, time, queue, subprocess, os),
:mod:`.threads` with :mod:`.green_thread` (the cooperative ``_thread``),
:mod:`.signals`, :mod:`.multiprocessing`; ``python -m greenline.monkey`` is
:mod:`.__main__`.  May import: greenline's public modules and ``_core``;
never the servers or the tools.
"""

from __future__ import annotations

from typing import Any

from greenline.monkey.multiprocessing import patch_multiprocessing
from greenline.monkey.originals import (
    MonkeyPatchWarning,
    get_original,
    is_anything_patched,
    is_module_patched,
    is_object_patched,
    saved,
)
from greenline.monkey.signals import patch_signal
from greenline.monkey.stdlib import (
    patch_dns,
    patch_os,
    patch_queue,
    patch_select,
    patch_selectors,
    patch_socket,
    patch_ssl,
    patch_subprocess,
    patch_time,
)
from greenline.monkey.threads import patch_thread

__all__ = [
    "MonkeyPatchWarning",
    "patch_all",
    "patch_socket",
    "patch_dns",
    "patch_ssl",
    "patch_time",
    "patch_select",
    "patch_selectors",
    "patch_thread",
    "patch_queue",
    "patch_subprocess",
    "patch_os",
    "patch_signal",
    "patch_multiprocessing",
    "is_module_patched",
    "is_anything_patched",
    "is_object_patched",
    "get_original",
    "saved",
]


# gevent's patch_all keywords that need nothing here: greenline covers them
# already (aggressive select patching, green threading.Event, per-greenlet
# contextvars in greenlet 3) or they concern Python 2.
_ACCEPTED_NOOPS = {"aggressive", "Event", "builtins", "contextvars", "sys", "httplib"}


def patch_all(socket: bool = True, dns: bool = True, time: bool = True, select: bool = True,
              selectors: bool = True, thread: bool = True, threading: bool = True,
              queue: bool = True, ssl: bool = True, subprocess: bool = True, os: bool = True,
              signal: bool = True, logging: bool = True, multiprocessing: bool = True,
              **kwargs: Any) -> None:
    """Patch the standard library (see the module docstring).  Every keyword
    defaults to True; pass False to leave that part alone.  Calling it again
    is harmless."""
    unknown = set(kwargs) - _ACCEPTED_NOOPS
    if unknown:
        raise TypeError(f"patch_all() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    if kwargs.get("sys"):
        raise ValueError("greenline does not patch sys (stdin/stdout/stderr stay blocking)")
    if os:
        patch_os()
    if time:
        patch_time()
    if thread:
        patch_thread(threading=threading, logging=logging)
    if socket:
        patch_socket(dns=dns)
    elif dns:
        patch_dns()
    if select:
        patch_select()
    if selectors:
        patch_selectors()
    if ssl:
        patch_ssl()
    if subprocess:
        patch_subprocess()
    if signal:
        patch_signal()
    if queue:
        patch_queue()
    if multiprocessing:
        patch_multiprocessing()

"""``gevent.threadpool``: calls run in real threads, awaited cooperatively.

May import: greenline's modules, not the tools.
"""

from greenline._core.workers import (
    ThreadPool,
    ThreadPoolExecutor,
    ThreadResult,
    get_thread_profile,
    get_thread_trace,
)

# gevent's names for the hooks its workers install around each call
_get_thread_profile = get_thread_profile
_get_thread_trace = get_thread_trace

__all__ = ["ThreadPool", "ThreadPoolExecutor", "ThreadResult"]

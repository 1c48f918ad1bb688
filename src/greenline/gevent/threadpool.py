"""``gevent.threadpool``: calls run in real threads, awaited cooperatively.

May import: greenline's modules, not the tools.
"""

from greenline._core.workers import ThreadPool, ThreadPoolExecutor, ThreadResult

__all__ = ["ThreadPool", "ThreadPoolExecutor", "ThreadResult"]

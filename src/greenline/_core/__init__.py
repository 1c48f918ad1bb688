"""The runtime: what every green thread stands on.

* :mod:`.hub` — one event loop per OS thread: the ready queue, timers,
  descriptor readiness (epoll, or ``selectors`` elsewhere), cross-thread
  wake-ups.  The whole scheduler is that one file.
* :mod:`.fdio` — waiting on raw descriptors and the cooperative
  ``os.read``/``os.write`` that ``select``, ``subprocess`` and patching share.
* :mod:`.waiters` — the wait list under every lock, event and queue.
* :mod:`.task` — a green thread (``spawn``, ``join``, ``kill``).
* :mod:`.timeout`, :mod:`.cancel`, :mod:`.taskgroup` — deadlines, cancel
  scopes and task groups: ways to stop green threads at their next blocking
  point.
* :mod:`.threadpool` — real OS threads for calls that cannot be cooperative.
* :mod:`.watchdog` — the blocking detector (``GREENLINE_BLOCK_WARN_MS``).

May import: the standard library and ``greenlet``, and other modules of this
package (the hub imports none of them at module level).  Nothing outside
``_core`` is imported from here.  Private: users reach these names through
``greenline`` and its public modules.
"""

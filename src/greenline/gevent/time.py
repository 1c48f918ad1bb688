"""``gevent.time``: the ``time`` module with a cooperative ``sleep``: once
``time`` is monkey-patched, the very function the patching installed (so
``time.sleep is gevent.time.sleep``, as with gevent).

May import: greenline's modules, not the tools.
"""

from time import *  # noqa: F403
from typing import Any

del sleep  # noqa: F821 - the stdlib's; __getattr__ gives the cooperative one


def __getattr__(name: str) -> Any:
    if name == "sleep":
        import time

        from greenline._core.hub import sleep
        from greenline.monkey import is_module_patched

        return time.sleep if is_module_patched("time") else sleep
    raise AttributeError(f"module 'gevent.time' has no attribute {name!r}")

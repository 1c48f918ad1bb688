"""``gevent.time``: the ``time`` module with a cooperative ``sleep``.

May import: greenline's modules, not the tools.
"""

from time import *  # noqa: F403

from greenline._core.hub import sleep  # type: ignore[assignment]  # noqa: F401

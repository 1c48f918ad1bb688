"""``gevent.socket``: greenline's cooperative ``socket`` module.

May import: greenline's modules, not the tools.
"""

from greenline._core.fdio import wait_read, wait_write  # noqa: E402,F401 - gevent.socket has them
from greenline.socket import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.socket import __all__  # noqa: F401

"""``gevent.ssl``: greenline's cooperative ``ssl`` module.

May import: greenline's modules, not the tools.
"""

from greenline.ssl import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.ssl import __all__  # noqa: F401

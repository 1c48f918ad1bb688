"""``gevent.select``: greenline's cooperative ``select`` module.

May import: greenline's modules, not the tools.
"""

from greenline.select import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.select import __all__  # noqa: F401

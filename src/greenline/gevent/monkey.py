"""``gevent.monkey``: greenline's patching under gevent's names.

May import: greenline's modules, not the tools.
"""

from greenline.monkey import *  # noqa: F403
from greenline.monkey import __all__  # noqa: F401

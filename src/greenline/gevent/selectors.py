"""``gevent.selectors``: greenline's cooperative ``selectors`` module.

May import: greenline's modules, not the tools.
"""

from greenline.selectors import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.selectors import __all__  # noqa: F401

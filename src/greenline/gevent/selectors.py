"""``gevent.selectors``: greenline's cooperative ``selectors`` module;
``GeventSelector`` is its default selector.

May import: greenline's modules, not the tools.
"""

from greenline.selectors import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.selectors import DefaultSelector
from greenline.selectors import __all__ as _names

GeventSelector = DefaultSelector

__all__ = [*_names, "GeventSelector"]

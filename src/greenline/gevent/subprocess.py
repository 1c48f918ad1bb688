"""``gevent.subprocess``: greenline's cooperative ``subprocess`` module.

May import: greenline's modules, not the tools.
"""

from greenline.blocking.fileobject import FileObject  # noqa: E402,F401 - gevent.subprocess has it
from greenline.subprocess import *  # noqa: F403 - the whole stdlib-shaped module
from greenline.subprocess import __all__  # noqa: F401

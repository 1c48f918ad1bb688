"""``gevent.threading``: the green ``threading`` names.

May import: greenline's modules, not the tools.
"""

from greenline.lock import Lock, RLock
from greenline.monkey.green_thread import get_ident

__all__ = ["Lock", "RLock", "get_ident"]

"""``gevent.signal``: ``signal_handler`` beside the ``signal`` module's names.

May import: greenline's modules, not the tools.
"""

from signal import *  # noqa: F403

from greenline.blocking.signal import signal_handler  # noqa: F401

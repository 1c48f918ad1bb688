"""``gevent.os``: raw descriptors without blocking, and ``fork``.

May import: greenline's modules, not the tools.
"""

from os import *  # noqa: F403 - gevent.os is the os module plus these

from greenline.blocking.os import (  # noqa: F401
    fork,
    fork_and_watch,
    forkpty,
    make_nonblocking,
    nb_read,
    nb_write,
    tp_read,
    tp_write,
    waitpid,
)

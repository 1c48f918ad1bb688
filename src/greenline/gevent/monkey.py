"""``gevent.monkey``: greenline's patching under gevent's names.

``patch_all`` takes gevent's keywords; those greenline has no use for, and
the extra ones gevent hands to its event subscribers, are accepted and
ignored.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

import inspect
from typing import Any

from greenline import monkey as _monkey
from greenline.monkey import *  # noqa: F403
from greenline.monkey import __all__  # noqa: F401

_KNOWN = set(inspect.signature(_monkey.patch_all).parameters) - {"kwargs"}
_NOOPS = {"aggressive", "Event", "builtins", "contextvars", "httplib"}


def patch_all(**kwargs: Any) -> None:  # type: ignore[no-redef]
    """gevent's ``patch_all``: greenline's, with gevent's extra keywords."""
    _monkey.patch_all(**{k: v for k, v in kwargs.items() if k in _KNOWN or k in _NOOPS or k == "sys"})

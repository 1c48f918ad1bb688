"""tests/wsgi drive ``greenline serve --wsgi`` and gunicorn with the helpers
of tests/servers (a server subprocess on port 0, its port read from its
first line): that directory goes on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

_SERVERS = str(Path(__file__).resolve().parents[1] / "servers")
if _SERVERS not in sys.path:
    sys.path.append(_SERVERS)

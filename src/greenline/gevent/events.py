"""``gevent.events``: the subscriber list gevent publishes events to.
greenline publishes none; the list exists so programs that subscribe run.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

from typing import Any

subscribers: list[Any] = []


def notify(event: Any) -> None:
    for subscriber in subscribers:
        subscriber(event)


__all__ = ["notify", "subscribers"]

"""DatagramServer: UDP, each datagram handled by ``handle(data, address)``
in a green thread (gevent's ``gevent.server.DatagramServer``).

>>> from greenline.servers.datagram import DatagramServer
>>> class Echo(DatagramServer):
...     def handle(self, data, address):
...         self.socket.sendto(data.upper(), address)
>>> server = Echo("127.0.0.1:0")
>>> server.start()
>>> from greenline import socket
>>> c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
>>> c.sendto(b"hi", server.address)
2
>>> c.recvfrom(100)[0]
b'HI'
>>> server.stop(); c.close()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from greenline import socket as gsocket
from greenline._core.hub import get_hub
from greenline._core.task import Task, spawn
from greenline.servers.stream import BoundAddress, family_for, parse_address

__all__ = ["DatagramServer"]

log = logging.getLogger("greenline.server")

#: The largest datagram read in one call.
MAX_DATAGRAM = 8192


class DatagramServer(BoundAddress):
    """Read datagrams from a UDP socket; call ``handle(data, address)`` for
    each, in a new green thread (or through ``spawn``: a Pool, a callable,
    or a limit on the handlers running at once)."""

    reuse_addr: int | None = None
    max_datagram = MAX_DATAGRAM

    def __init__(self, listener: Any, handle: Callable[[bytes, Any], object] | None = None,
                 spawn: Any = "default") -> None:
        if handle is not None:
            self.handle = handle  # type: ignore[method-assign,assignment]
        self._spawn = _spawner(spawn)
        self.pool = spawn if hasattr(spawn, "spawn") else None
        self.socket: gsocket.socket | None = None
        self._address: tuple[str, int] | None = None
        if hasattr(listener, "recvfrom") and hasattr(listener, "fileno"):
            self.socket = listener if isinstance(listener, gsocket.socket) else gsocket.fromfd(
                listener.fileno(), listener.family, listener.type, listener.proto)
        else:
            self._address = parse_address(listener)
        self._reader: Task | None = None
        self._stopped: list[Any] = []
        self.closed = False

    def handle(self, data: bytes, address: Any) -> object:
        raise NotImplementedError("give DatagramServer a handle(data, address) function")

    def init_socket(self) -> None:
        if self.socket is not None:
            return
        assert self._address is not None
        host, port = self._address
        sock = gsocket.socket(family_for(host), gsocket.SOCK_DGRAM)
        if self.reuse_addr:
            sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.socket = sock

    @property
    def started(self) -> bool:
        return self._reader is not None and not self.closed

    def sendto(self, data: bytes, address: Any) -> int:
        assert self.socket is not None
        return self.socket.sendto(data, address)

    def start(self) -> None:
        if self._reader is not None:
            raise RuntimeError("this server has already been started")
        self.init_socket()
        self._reader = spawn(self._read_loop)

    def _read_loop(self) -> None:
        sock = self.socket
        assert sock is not None
        while not self.closed:
            try:
                data, address = sock.recvfrom(self.max_datagram)
            except OSError:
                if self.closed:
                    return
                log.exception("recvfrom failed")
                continue
            self._spawn(self._handle_one, data, address)

    def _handle_one(self, data: bytes, address: Any) -> None:
        try:
            self.handle(data, address)
        except Exception:
            self.handle_error(data, address)

    def handle_error(self, data: bytes, address: Any) -> None:
        import sys

        get_hub().handle_error((self, address), *sys.exc_info())

    def serve_forever(self, stop_timeout: float | None = None) -> None:
        if self._reader is None:
            self.start()
        hub = get_hub()
        me = getcurrent()
        while not self.closed:
            self._stopped.append(me)
            try:
                hub.block()
            finally:
                if me in self._stopped:
                    self._stopped.remove(me)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        reader = self._reader
        if reader is not None and reader is not getcurrent():
            reader.kill(block=False)
        if self.socket is not None:
            self.socket.close()
        hub = get_hub()
        waiters, self._stopped = self._stopped, []
        for g in waiters:
            hub.wake(g)

    def stop(self, timeout: float | None = None) -> None:
        self.close()

    def __enter__(self) -> DatagramServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawner(spawn_arg: Any) -> Callable[..., Any]:
    if spawn_arg in ("default", None):
        return spawn
    if hasattr(spawn_arg, "spawn"):
        return spawn_arg.spawn  # type: ignore[no-any-return]
    if isinstance(spawn_arg, int) and not isinstance(spawn_arg, bool):
        from greenline.pool import Pool

        return Pool(spawn_arg).spawn
    if callable(spawn_arg):
        return spawn_arg  # type: ignore[no-any-return]
    raise TypeError("spawn must be 'default', a limit (int), a Pool or a callable")

"""asyncio ``Protocol`` (``loop.create_server``): callbacks, no coroutine per
connection, the cheapest way to serve with asyncio.

    python -m greenline.tools.peers.asyncio_protocol --port 0
"""

from __future__ import annotations

import asyncio
from typing import Any

from greenline.tools.peers._common import bound_socket, listening, run_asyncio


class Upper(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())


async def serve(host: str, port: int, backlog: int) -> None:
    sock = bound_socket(host, port, backlog)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upper, sock=sock, backlog=backlog)
    listening(sock)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None, use_uvloop: bool = False) -> int:
    return run_asyncio(serve, "asyncio Protocol", argv, use_uvloop)


if __name__ == "__main__":
    raise SystemExit(main())

"""asyncio streams (``asyncio.start_server``): a coroutine per connection.

    python -m greenline.tools.peers.asyncio_streams --port 0
"""

from __future__ import annotations

import asyncio

from greenline.tools.peers._common import RECV_SIZE, bound_socket, listening, run_asyncio


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(RECV_SIZE)
            if not data:
                break
            writer.write(data.upper())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, backlog: int) -> None:
    sock = bound_socket(host, port, backlog)
    server = await asyncio.start_server(handle, sock=sock, backlog=backlog)
    listening(sock)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None, use_uvloop: bool = False) -> int:
    return run_asyncio(serve, "asyncio streams", argv, use_uvloop)


if __name__ == "__main__":
    raise SystemExit(main())

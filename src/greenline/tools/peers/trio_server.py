"""trio (``trio.serve_listeners``): a task per connection in a nursery.

    python -m greenline.tools.peers.trio_server --port 0
"""

from __future__ import annotations

from typing import Any

from greenline.tools.peers._common import RECV_SIZE, bound_socket, listening, parse_args


async def handle(stream: Any) -> None:
    import trio

    try:
        async with stream:
            while True:
                data = await stream.receive_some(RECV_SIZE)
                if not data:
                    break
                await stream.send_all(data.upper())
    except trio.BrokenResourceError:
        pass


async def serve(host: str, port: int, backlog: int) -> None:
    import trio

    plain = bound_socket(host, port, backlog)
    sock = trio.socket.from_stdlib_socket(plain)
    listener = trio.SocketListener(sock)
    listening(plain)
    await trio.serve_listeners(handle, [listener])


def main(argv: list[str] | None = None) -> int:
    args = parse_args("trio serving the echo-upper protocol.", argv)
    import trio

    trio.run(serve, args.host, args.port, args.backlog)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

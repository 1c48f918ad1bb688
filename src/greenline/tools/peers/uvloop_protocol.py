"""asyncio ``Protocol`` on uvloop.

    python -m greenline.tools.peers.uvloop_protocol --port 0
"""

from greenline.tools.peers.asyncio_protocol import main

if __name__ == "__main__":
    raise SystemExit(main(use_uvloop=True))

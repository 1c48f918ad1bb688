"""asyncio streams on uvloop.

    python -m greenline.tools.peers.uvloop_streams --port 0
"""

from greenline.tools.peers.asyncio_streams import main

if __name__ == "__main__":
    raise SystemExit(main(use_uvloop=True))

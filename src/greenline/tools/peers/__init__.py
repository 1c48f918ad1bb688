"""Peer servers for ``greenline bench``: the same echo-upper protocol served
by other concurrency libraries, one module per server.

Each runs as ``python -m greenline.tools.peers.NAME --port P`` and prints
``listening on HOST:PORT`` once it accepts.  Each imports its own library
(gevent, uvloop, trio) inside itself only: nothing else in greenline imports
them, and this package's ``__init__`` imports nothing.
"""

# module name -> (what it is, the packages it needs beyond the stdlib)
PEERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "seed_gevent": ("the seed's server verbatim under gevent (monkey.patch_all)", ("gevent",)),
    "gevent_server": ("gevent.server.StreamServer", ("gevent",)),
    "asyncio_streams": ("asyncio streams (start_server)", ()),
    "asyncio_protocol": ("asyncio Protocol (create_server)", ()),
    "uvloop_streams": ("asyncio streams on uvloop", ("uvloop",)),
    "uvloop_protocol": ("asyncio Protocol on uvloop", ("uvloop",)),
    "trio_server": ("trio.serve_tcp", ("trio",)),
    "threads": ("a thread per connection, blocking sockets", ()),
    "serial": ("a serial blocking server: one client at a time", ()),
}

"""The seed's coroutine TCP server, as an app for ``greenline serve``.

The seed writes the accept loop and the per-connection loop itself.  Under
``greenline serve`` only the per-connection part is yours: the server
accepts, starts one green thread per connection, and calls your function
with the connected socket and the client's address.  What is left of the
seed's server is its ``communication`` function, given the ``address``
argument every app receives::

    cd examples/apps
    greenline serve seed_app:communication --monkey-patch --port 8080 --procs auto --threads 2

That is the seed's ideal, processes x threads x coroutines, in one command.
The socket handed to you is already cooperative.  ``--monkey-patch`` plays
the part of the seed's ``monkey.patch_all()`` line: it is only needed because
a real handler calls other blocking code (here ``time.sleep``, a stand-in for
a database or a file) that should switch green threads too instead of
stopping its whole OS thread.  (Patch on the command line, not at the top of
this module: ``greenline serve`` imports the module, and patching in the
middle of an import is too late to be safe.)
"""

import os
import socket
import time
from typing import Any

# Seconds each reply is held back, to show that a blocking call in one
# connection does not hold up the others.  0 by default: a plain upper server.
THINK_SECONDS = float(os.environ.get("SEED_THINK_SECONDS", "0"))


def communication(conn: socket.socket, address: Any) -> None:
    while True:
        try:
            data = conn.recv(1024)
            if len(data) == 0: break  # noqa: E701 - as the seed writes it
            if THINK_SECONDS:
                time.sleep(THINK_SECONDS)  # patched: only this green thread waits
            # sendall, not the seed's send: send may take only part of a
            # large reply, and the rest would be lost.
            conn.sendall(data.upper())
        except ConnectionResetError as e:
            print(e)
            break
    conn.close()

"""Servers: accepting connections and running a green thread for each.

* :mod:`.stream` — ``StreamServer``: gevent's server for any
  ``handle(sock, address)`` protocol, in one OS thread.
* :mod:`.supervisor` — the arbiter behind ``greenline serve``: binds once,
  forks worker processes, runs a stream server per thread in each, and
  handles signals (reload, graceful stop, restart of dead workers).
* :mod:`.apps` — finding an app by ``module:attribute``, and the built-in
  protocols (``upper``, ``echo``).

The HTTP server, built on :mod:`.stream`, is its own package,
:mod:`greenline.wsgi`.

May import: the library (``greenline``'s public modules and ``_core``), and
``greenline.monkey`` for a worker asked to patch.  Never ``greenline.tools``:
the command line is built on the servers, not the other way round.
"""

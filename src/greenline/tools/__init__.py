"""The ``greenline`` command's subcommands, one module each.

* :mod:`.serve` — ``greenline serve``: parse the options, hand them to the
  supervisor.
* :mod:`.load` and :mod:`.report` — ``greenline load``: the load generator
  and its results (HDR histograms, JSON, merging).
* :mod:`.demo` — ``greenline demo``: the tour.
* :mod:`.bench`, :mod:`.lab`, :mod:`.peers` — ``greenline bench`` and
  ``greenline lab``: measurements against other servers.

Each subcommand module defines ``add_parser(subparsers)``; ``greenline/__main__``
maps command names to them.  May import anything in greenline; nothing in the
library or the servers imports a tool.
"""

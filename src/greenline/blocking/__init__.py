"""Bridges to what blocks the OS thread: raw descriptors and ``fork``
(:mod:`.os`), file objects (:mod:`.fileobject`) and signal handlers
(:mod:`.signal`), with gevent's names and semantics.

May import: greenline's public modules and ``_core``; never the servers,
the tools or :mod:`greenline.gevent`.
"""

"""HTTP/1.1 and WSGI: web applications on green threads.

>>> from greenline.wsgi import WSGIServer          # gevent.pywsgi's names
>>> def app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"hello\\n"]
>>> server = WSGIServer(("127.0.0.1", 0), app)     # doctest: +SKIP
>>> server.serve_forever()                         # doctest: +SKIP

* :mod:`.http` — the HTTP/1.1 protocol, every rule in one place: parsing
  with llhttp (``httptools``), framing, limits, keep-alive and pipelining,
  timeouts.  Tested rule by rule in ``tests/wsgi/test_http.py``.
* :mod:`.server` — ``WSGIServer``: PEP 3333 on top of that, a
  :class:`~greenline.servers.stream.StreamServer` underneath.
  ``greenline serve --wsgi module:app`` runs one per thread per process.
* :mod:`.gunicorn` — a gunicorn worker class
  (``gunicorn -k greenline.wsgi.gunicorn.Worker``); not imported here.

May import: the library (``greenline``'s public modules and ``_core``),
``httptools``, :mod:`greenline.monkey` (the gunicorn worker patches) and
:mod:`greenline.servers.stream`; ``gunicorn`` in :mod:`.gunicorn` only.
Never the tools.
"""

from greenline.wsgi.http import HTTPError, Limits
from greenline.wsgi.server import FileWrapper, WSGIServer

__all__ = ["WSGIServer", "FileWrapper", "Limits", "HTTPError"]

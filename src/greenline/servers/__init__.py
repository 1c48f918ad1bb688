"""Servers: the stream server, the supervisor, and the HTTP/WSGI server that
runs on them.  :mod:`greenline.servers.http` keeps every HTTP/1.1 rule in one
place; :mod:`greenline.servers.wsgi` puts a WSGI application (PEP 3333) behind
it, one green thread per connection.
"""

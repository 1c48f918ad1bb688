"""greenline.wsgi: PEP 3333 (checked with wsgiref.validate), the
environ, wsgi.input streaming, file_wrapper, start_response and exc_info,
write(), close(), broken applications, logs, and gevent.pywsgi's API.

Server and clients share the test's hub, as in test_http.py.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import tracemalloc
from typing import Any
from wsgiref.validate import validator

import pytest
from http_helpers import (
    closed_after,
    connect,
    hello,
    raw_exchange,
    read_responses,
    read_until_close,
    request,
    serving,
    status_of,
)

import greenline
from greenline import socket
from greenline.wsgi import FileWrapper, WSGIServer
from greenline.wsgi.http import Limits

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def capture(store: list[dict[str, Any]], body: bytes = b"ok") -> Any:
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        env = dict(environ)
        env["_body"] = inp.read()
        store.append(env)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


# -- the environ ------------------------------------------------------------


def test_the_environ_has_every_key_pep_3333_requires():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        c = connect(server)
        c.sendall(b"POST /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.org:8080\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 3\r\nX-Thing: 1\r\n\r\nabc")
        read_responses(c, 1)
        local_port = c.getsockname()[1]
        c.close()
    (env,) = envs
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(server.server_port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "example.org:8080" and env["HTTP_X_THING"] == "1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(local_port)
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert hasattr(env["wsgi.errors"], "write") and env["wsgi.file_wrapper"] is FileWrapper
    assert env["_body"] == b"abc"
    assert all(type(k) is str and (type(v) is str or not k.isupper()) for k, v in env.items())


def test_wsgiref_validator_finds_nothing_wrong():
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        lines = [inp.readline(), *inp.readlines()]
        rest = inp.read(100)
        body = b"|".join(lines) + rest
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    with serving(validator(app)) as server:
        rs = request(server, b"POST /v HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 6\r\n\r\na\nb\nc\n" + GET, 2)
    assert [r.status for r in rs] == [200, 200] and rs[0].body == b"a\n|b\n|c\n"
    with serving(validator(app)) as server:
        data = raw_exchange(server, b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status_of(data) == 200 and data.endswith(b"\r\n\r\n")
    assert server.app_errors == 0


def test_wsgiref_validator_accepts_streamed_and_write_responses():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/write":
            write(b"written,")
            return [b"returned"]
        return iter([b"a", b"b"])

    with serving(validator(app)) as server:
        rs = request(server, b"GET /write HTTP/1.1\r\nHost: t\r\n\r\nGET /iter HTTP/1.1\r\nHost: t\r\n\r\n", 2)
    assert [r.body for r in rs] == [b"written,returned", b"ab"]
    assert server.app_errors == 0


def test_path_info_is_percent_decoded_and_carried_as_latin_1():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        request(server, b"GET /caf%C3%A9/a%2Fb/%41?q=%C3%A9 HTTP/1.1\r\nHost: t\r\n\r\n")
    env = envs[0]
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/a/b/A"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/caf\u00e9/a/b/A"
    assert env["QUERY_STRING"] == "q=%C3%A9" and env["RAW_URI"] == "/caf%C3%A9/a%2Fb/%41?q=%C3%A9"


def test_an_absolute_form_target_gives_its_path():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        request(server, b"GET http://example.org/p/q?z=1 HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert envs[0]["PATH_INFO"] == "/p/q" and envs[0]["QUERY_STRING"] == "z=1"


def test_repeated_headers_are_joined_with_commas_and_cookies_with_semicolons():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        request(server, b"GET / HTTP/1.1\r\nHost: t\r\nAccept: a/b\r\nX-A: 1\r\naccept: c/d\r\n"
                        b"Cookie: a=1\r\nCookie: b=2\r\n\r\n")
    assert envs[0]["HTTP_ACCEPT"] == "a/b, c/d" and envs[0]["HTTP_COOKIE"] == "a=1; b=2"


def test_header_names_with_underscores_are_dropped():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        request(server, b"GET / HTTP/1.1\r\nHost: t\r\nX-User: good\r\nX_User: spoofed\r\n\r\n")
    assert envs[0]["HTTP_X_USER"] == "good"


def test_header_values_reach_the_app_as_latin_1():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        request(server, b"GET / HTTP/1.1\r\nHost: t\r\nX-Name: caf\xc3\xa9\r\n\r\n")
    assert envs[0]["HTTP_X_NAME"].encode("latin-1") == b"caf\xc3\xa9"


def test_http_1_0_request_has_its_protocol_and_no_host_needed():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs)) as server:
        request(server, b"GET / HTTP/1.0\r\n\r\n")
    assert envs[0]["SERVER_PROTOCOL"] == "HTTP/1.0" and "HTTP_HOST" not in envs[0]


def test_extra_environ_keys_and_multiprocess_flags_are_passed_on():
    envs: list[dict[str, Any]] = []
    with serving(capture(envs), environ={"app.name": "x"}, multiprocess=True, multithread=True) as server:
        request(server, GET)
    assert envs[0]["app.name"] == "x"
    assert envs[0]["wsgi.multiprocess"] is True and envs[0]["wsgi.multithread"] is True


def test_url_scheme_is_https_under_tls():
    trustme = pytest.importorskip("trustme")
    import ssl as stdssl

    from greenline import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    envs: list[dict[str, Any]] = []
    with serving(capture(envs, b"secret"), ssl_context=server_ctx) as server:
        raw = socket.create_connection(server.address, timeout=5)
        c = client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_until_close(c)
        c.close()
    assert envs[0]["wsgi.url_scheme"] == "https" and data.endswith(b"\r\n\r\nsecret")


# -- wsgi.input -----------------------------------------------------------


def test_wsgi_input_reads_lines_iterates_and_returns_empty_past_the_end():
    results: dict[str, Any] = {}

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        results["first"] = inp.read(3)
        results["line"] = inp.readline()
        results["short"] = inp.readline(2)
        results["lines"] = list(inp)
        results["after"] = (inp.read(), inp.read(10), inp.readline(), inp.readlines())
        start_response("200 OK", [])
        return []

    with serving(app) as server:
        (r,) = request(server, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"4\r\nabcd\r\n5\r\nef\ngh\r\n3\r\nij\n\r\n2\r\nkl\r\n0\r\n\r\n")
    assert r.status == 200
    assert results["first"] == b"abc" and results["line"] == b"def\n"
    assert results["short"] == b"gh" and results["lines"] == [b"ij\n", b"kl"]
    assert results["after"] == (b"", b"", b"", [])


def test_wsgi_input_is_bounded_by_content_length_and_never_reads_the_next_request():
    results: list[bytes] = []

    def app(environ, start_response):
        results.append(environ["wsgi.input"].read(1000))
        start_response("200 OK", [])
        return []

    with serving(app) as server:
        rs = request(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody" + GET, 2)
    assert [r.status for r in rs] == [200, 200] and results == [b"body", b""]


def test_a_large_chunked_upload_streams_through_in_bounded_memory():
    size = 200 << 20
    block = os.urandom(1 << 16)
    counted: dict[str, int] = {}

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        total = 0
        while data := inp.read(1 << 16):
            total += len(data)
        counted["total"] = total
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def client(server):
        c = connect(server, timeout=30)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n%s\r\n" % (len(block), block)
        for _ in range(size // len(block)):
            c.sendall(frame)
        c.sendall(b"0\r\n\r\n")
        rs, _ = read_responses(c, 1)
        c.close()
        return rs

    with serving(app) as server:
        tracemalloc.start()
        try:
            t0 = time.monotonic()
            rs = greenline.spawn(client, server).get(timeout=60)
            elapsed = time.monotonic() - t0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert rs[0].status == 200 and counted["total"] == size
    assert peak < 4 << 20, f"peak traced memory {peak} bytes for a {size}-byte body"
    assert elapsed < 60


# -- responses ------------------------------------------------------------


def test_file_wrapper_sends_a_regular_file_with_sendfile(monkeypatch):
    calls = []
    real = socket.socket.sendfile

    def spy(self, file, offset=0, count=None):
        calls.append((offset, count))
        return real(self, file, offset, count)

    monkeypatch.setattr(socket.socket, "sendfile", spy)
    content = os.urandom(300_000)
    with tempfile.TemporaryFile() as f:
        f.write(content)
        f.seek(1000)

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return environ["wsgi.file_wrapper"](f, 8192)

        with serving(app) as server:
            (r,) = request(server, GET)
    assert r.body == content[1000:] and r.header("Content-Length") == str(len(content) - 1000)
    assert calls == [(1000, len(content) - 1000)]


def test_file_wrapper_of_something_without_a_descriptor_is_iterated():
    closed = []

    class Source(io.BytesIO):
        def close(self):
            closed.append(True)
            super().close()

    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](Source(b"x" * 100_000), 4096)

    with serving(app) as server:
        (r,) = request(server, GET)
    assert r.body == b"x" * 100_000 and closed == [True]


def test_write_callable_sends_before_the_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        return [b"def"]

    with serving(app) as server:
        (r,) = request(server, GET)
    assert r.body == b"abcdef"


def test_start_response_with_exc_info_before_anything_is_sent_replaces_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            import sys

            start_response("503 Busy", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    with serving(app) as server:
        (r,) = request(server, GET)
    assert r.status == 503 and r.body == b"sorry" and r.header("X-First") is None


def test_start_response_with_exc_info_after_the_head_was_sent_reraises_and_closes():
    logged: list[str] = []

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise KeyError("late")
        except KeyError:
            import sys

            start_response("500 Oops", [], sys.exc_info())
        return [b"never"]

    with serving(app, error_log=io.StringIO()) as server:
        c = connect(server)
        c.sendall(GET)
        data = read_until_close(c)
        c.close()
        logged.append(server.error_log.getvalue())
    assert status_of(data) == 200 and b"partial" in data and b"never" not in data
    assert not data.endswith(b"0\r\n\r\n")  # no last chunk: the client sees it cut short
    assert "KeyError: 'late'" in logged[0]


def test_close_of_the_iterable_is_called_always():
    closed: list[str] = []

    class Body:
        def __init__(self, name, fail):
            self.name, self.fail = name, fail

        def __iter__(self):
            yield b"a"
            if self.fail:
                raise RuntimeError("iterator broke")
            yield b"b"

        def close(self):
            closed.append(self.name)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body(environ["PATH_INFO"], environ["PATH_INFO"] == "/fail")

    with serving(app, error_log=io.StringIO()) as server:
        rs = request(server, GET.replace(b"/", b"/ok", 1))
        assert rs[0].body == b"ab"
        raw_exchange(server, GET.replace(b"/", b"/fail", 1))
        # The client goes away before reading: close() still runs.
        c = connect(server)
        c.sendall(GET.replace(b"/", b"/gone", 1))
        c.close()
        deadline = time.monotonic() + 5
        while "/gone" not in closed and time.monotonic() < deadline:
            greenline.sleep(0.01)
    assert sorted(closed) == ["/fail", "/gone", "/ok"]


def test_an_iterator_failing_after_the_head_was_sent_closes_the_connection():
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        raise RuntimeError("broken")

    with serving(app, error_log=io.StringIO()) as server:
        c = connect(server)
        c.sendall(GET + GET)
        data = read_until_close(c)
        c.close()
    assert data.count(b"HTTP/1.1") == 1 and b"first" in data and not data.endswith(b"0\r\n\r\n")
    assert server.app_errors == 1


@pytest.mark.parametrize("name,app", [
    ("raises", lambda e, s: 1 / 0),
    ("never calls start_response", lambda e, s: [b"body"]),
    ("never calls start_response, empty body", lambda e, s: []),
    ("calls start_response twice", lambda e, s: (s("200 OK", []), s("200 OK", []))),
    ("yields str", lambda e, s: (s("200 OK", []), ["text"])[1]),
    ("returns bytes, not a list", lambda e, s: (s("200 OK", []), b"body")[1]),
    ("CR LF in a header value", lambda e, s: (s("200 OK", [("X-A", "1\r\nSet-Cookie: evil=1")]), [b""])[1]),
    ("LF in a header name", lambda e, s: (s("200 OK", [("X-A\n", "1")]), [b""])[1]),
    ("CR LF in the status", lambda e, s: (s("200 OK\r\nX: y", []), [b""])[1]),
    ("a status that is not one", lambda e, s: (s("OK", []), [b""])[1]),
    ("bytes header name", lambda e, s: (s("200 OK", [(b"X-A", "1")]), [b""])[1]),
    ("non-latin-1 header value", lambda e, s: (s("200 OK", [("X-A", "\u20ac")]), [b""])[1]),
    ("hop-by-hop header", lambda e, s: (s("200 OK", [("Transfer-Encoding", "chunked")]), [b""])[1]),
    ("headers as a tuple", lambda e, s: (s("200 OK", (("X-A", "1"),)), [b""])[1]),
    ("a bad Content-Length", lambda e, s: (s("200 OK", [("Content-Length", "-1")]), [b""])[1]),
])
def test_a_broken_app_gets_500_is_logged_once_and_the_server_goes_on(name, app):
    log = io.StringIO()
    with serving(app, error_log=log) as server:
        data = raw_exchange(server, GET)
        (ok,) = request(server, GET)  # the server still serves
    assert status_of(data) == 500, name
    assert b"evil" not in data and data.count(b"HTTP/1.1") == 1
    assert ok.status == 500  # the same broken app, answered again
    assert log.getvalue().count("Traceback (most recent call last)") == 2
    assert server.app_errors == 2


def test_app_errors_go_to_the_greenline_wsgi_logger_by_default(caplog):
    with caplog.at_level(logging.ERROR, logger="greenline.wsgi"), serving(lambda e, s: 1 / 0) as server:
        data = raw_exchange(server, GET)
    assert status_of(data) == 500
    records = [r for r in caplog.records if r.name == "greenline.wsgi"]
    assert len(records) == 1 and records[0].exc_info and records[0].exc_info[0] is ZeroDivisionError


def test_a_content_length_shorter_than_the_body_is_kept_and_longer_closes():
    def app(environ, start_response):
        n = environ["PATH_INFO"][1:]
        start_response("200 OK", [("Content-Length", n)])
        return [b"12345"]

    with serving(app) as server:
        c = connect(server)
        c.sendall(b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n")
        (r,), _ = read_responses(c, 1)
        assert r.body == b"123"
        c.sendall(b"GET /9 HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_until_close(c)
        c.close()
    assert data.endswith(b"\r\n\r\n12345")  # and then the connection closed


def test_connection_close_from_the_app_closes_after_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Connection", "close"), ("Content-Length", "2")])
        return [b"ok"]

    with serving(app) as server:
        c = connect(server)
        c.sendall(GET + GET)
        (r,), _ = read_responses(c, 1)
        assert r.header("Connection") == "close" and closed_after(c)
        c.close()


def test_the_apps_own_date_and_server_headers_are_kept():
    def app(environ, start_response):
        start_response("200 OK", [("Server", "mine"), ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")])
        return [b""]

    with serving(app) as server:
        (r,) = request(server, GET)
    assert r.header("Server") == "mine" and r.header("Date") == "Thu, 01 Jan 1970 00:00:00 GMT"


# -- logs and API ----------------------------------------------------------


def test_no_access_log_by_default_and_common_log_format_when_asked(capsys):
    with serving() as server:
        request(server, GET)
    assert capsys.readouterr() == ("", "")
    log = io.StringIO()
    with serving(log=log) as server:
        request(server, b"GET /x?y=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    line = log.getvalue()
    import re

    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /x\?y=1 HTTP/1\.1" 200 13\n', line), line


def test_a_logger_can_be_the_access_log(caplog):
    with caplog.at_level(logging.INFO, logger="test.access"), \
            serving(log=logging.getLogger("test.access")) as server:
        request(server, GET)
    assert any('"GET / HTTP/1.1" 200 13' in r.getMessage() for r in caplog.records)


def test_gevent_pywsgi_names_work():
    server = WSGIServer(("127.0.0.1", 0), hello, log=None, error_log=None)
    greenline.spawn_later(0.2, server.stop)
    client = greenline.spawn_later(0.05, request, server, GET)
    t0 = time.monotonic()
    server.serve_forever()
    assert time.monotonic() - t0 < 3
    assert client.get(timeout=5)[0].status == 200
    assert server.server_port > 0 and server.address[1] == server.server_port
    assert server.application is hello and server.closed


def test_handler_class_is_refused_clearly():
    with pytest.raises(TypeError):
        WSGIServer(("127.0.0.1", 0), hello, handler_class=object)


def test_limits_are_checked():
    with pytest.raises(ValueError):
        Limits(header_timeout=0)
    with pytest.raises(ValueError):
        Limits(max_pipeline=0)


def test_two_servers_with_different_server_headers_do_not_share_heads():
    with serving(server_header="one") as a, serving(server_header="") as b:
        (ra,) = request(a, GET)
        (rb,) = request(b, GET)
        (ra2,) = request(a, GET)
    assert ra.header("Server") == "one" and rb.header("Server") is None and ra2.header("Server") == "one"

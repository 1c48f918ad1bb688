"""gevent.pywsgi's names besides the server: Input, the environ classes,
LoggingLogAdapter, and what pywsgi's server does that programs see (a list
answered with its Content-Length, start_response's checks)."""

from __future__ import annotations

import io
import pickle

import pytest

import greenline
from greenline import socket
from greenline.gevent import pywsgi


def _input(data: bytes, **kw: object) -> pywsgi.Input:
    return pywsgi.Input(io.BytesIO(data), **kw)  # type: ignore[arg-type]


def test_input_reads_a_body_within_its_length_and_refuses_a_short_one():
    assert _input(b"12345", content_length=3).read() == b"123"
    i = _input(b"ab\ncd\nef", content_length=7)
    assert list(i) == [b"ab\n", b"cd\n", b"e"]
    with pytest.raises(OSError):
        _input(b"1", content_length=2).read()
    with pytest.raises(OSError):
        _input(b"1", content_length=2).readline()


def test_input_reads_chunks_and_refuses_a_missing_last_chunk():
    body = b"3\r\nab\n\r\n2;ext=1\r\ncd\r\n0\r\n\r\n"
    assert _input(body, content_length=None, chunked_input=True).read() == b"ab\ncd"
    assert _input(body, content_length=None, chunked_input=True).readlines() == [b"ab\n", b"cd"]
    with pytest.raises(OSError):
        _input(b"1\r\na\r\n", content_length=None, chunked_input=True).read()
    with pytest.raises(OSError):
        _input(b"2\r\na", content_length=None, chunked_input=True).read(2)


def test_secure_environ_hides_values_copies_as_itself_and_pickles_as_a_dict():
    env = pywsgi.SecureEnviron({"HTTP_COOKIE": "secret"})
    assert "secret" not in repr(env) and "keys: 1" in repr(env)
    env.whitelist_keys = ("HTTP_COOKIE",)
    assert "secret" in repr(env)
    assert type(env.copy()) is pywsgi.SecureEnviron
    assert type(pickle.loads(pickle.dumps(env))) is dict


def _get(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(request)
        out = b""
        while data := c.recv(65536):
            out += data
    return out


def test_a_list_goes_out_with_its_length_and_start_response_checks_like_pywsgi():
    seen: list[object] = []

    class Logger:
        def log(self, level: int, msg: str) -> None:
            seen.append(msg)

    def app(environ, start_response):
        seen.append(type(environ))
        if environ["PATH_INFO"] == "/bad":
            try:
                start_response("200 OK", [("X", "a\r\nb")])
            except ValueError as e:
                seen.append(str(e))
            start_response("200 OK", [])
            return [b""]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello ", bytearray(b"world")]

    server = pywsgi.WSGIServer(("127.0.0.1", 0), app, log=Logger())
    server.environ_class = pywsgi.SecureEnviron
    server.start()
    try:
        port = server.server_port
        out = greenline.spawn(_get, port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").get(timeout=10)
        assert b"Content-Length: 11\r\n" in out and out.endswith(b"\r\n\r\nhello world")
        greenline.spawn(_get, port, b"GET /bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").get(timeout=10)
    finally:
        server.stop()
    assert seen[0] is pywsgi.SecureEnviron
    assert "carriage return or newline in header value" in seen
    assert any(isinstance(m, str) and '"GET / HTTP/1.1" 200 11' in m for m in seen)
    assert isinstance(server.log, pywsgi.LoggingLogAdapter)

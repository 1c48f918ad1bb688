"""The HTTP/1.1 rules of greenline.wsgi.http, one test per rule, through
raw sockets: framing, keep-alive, pipelining, HEAD, 100 Continue, limits,
timeouts and hostile input.

The server runs in the test's hub; clients are green threads of the same
hub, so nothing here may block the OS thread.  Timeouts are small (tenths of
a second) and every client socket has a 5 s timeout, so a broken rule fails
the test instead of hanging it.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

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
from greenline.wsgi import WSGIServer
from greenline.wsgi.http import Limits
from greenline.wsgi.server import LAST_CALL

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def echo_body(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def streamed(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one,"
    yield b""
    yield b"two"


# -- the basics ---------------------------------------------------------


def test_a_get_is_answered_with_content_length_date_and_server():
    with serving() as server:
        (r,) = request(server, GET)
    assert r.status == 200 and r.body == b"Hello, world\n"
    assert r.header("Content-Length") == "13"
    assert r.header("Server") == "greenline"
    date = email.utils.parsedate_to_datetime(r.header("Date"))
    assert abs(date.timestamp() - time.time()) < 5


def test_keep_alive_serves_several_requests_on_one_connection():
    with serving() as server:
        c = connect(server)
        for _ in range(3):
            c.sendall(GET)
            (r,), closed = read_responses(c, 1)
            assert r.status == 200 and r.body == b"Hello, world\n" and not closed
        c.close()


def test_pipelined_requests_are_answered_in_order():
    def path_app(environ, start_response):
        body = (environ["PATH_INFO"] + ":").encode() + environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    reqs = b"".join(
        b"POST /%d HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nab%d" % (i, i) for i in range(10))
    with serving(path_app) as server:
        rs = request(server, reqs, 10)
    assert [r.body for r in rs] == [b"/%d:ab%d" % (i, i) for i in range(10)]


def test_http_1_0_closes_after_the_response_unless_keep_alive_is_asked():
    with serving() as server:
        c = connect(server)
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        (r,), _ = read_responses(c, 1)
        assert r.status == 200 and r.body == b"Hello, world\n"
        assert closed_after(c)
        c.close()


def test_http_1_0_with_keep_alive_asked_keeps_the_connection():
    with serving() as server:
        c = connect(server)
        for _ in range(2):
            c.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            (r,), closed = read_responses(c, 1)
            assert r.status == 200 and not closed
            assert r.header("Connection") == "keep-alive"
        c.close()


def test_connection_close_from_the_client_closes_after_the_response():
    with serving() as server:
        c = connect(server)
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + GET)
        (r,), _ = read_responses(c, 1)
        assert r.status == 200 and r.header("Connection") == "close"
        assert closed_after(c)  # the second request is never answered
        c.close()


def test_head_is_answered_without_a_body():
    with serving() as server:
        data = raw_exchange(server, b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(data) == 200 and b"Content-Length: 13" in head and body == b""


def test_head_of_a_streamed_response_has_no_body_and_keeps_the_connection():
    with serving(streamed) as server:
        c = connect(server)
        c.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        greenline.sleep(0.05)  # let a wrongly sent body arrive before the next request
        c.sendall(GET)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"0\r\n\r\n"):
            chunk = c.recv(65536)
            assert chunk
            data += chunk
        first, _, rest = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in first and rest.startswith(b"HTTP/1.1 200")
        c.close()


def test_a_response_without_content_length_is_chunked_on_http_1_1():
    with serving(streamed) as server:
        (r,) = request(server, GET)
    assert r.header("Transfer-Encoding") == "chunked" and r.header("Content-Length") is None
    assert r.body == b"one,two"


def test_a_response_without_content_length_is_close_delimited_on_http_1_0():
    with serving(streamed) as server:
        data = raw_exchange(server, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert b"Connection: close" in head and body == b"one,two"


def test_a_one_piece_body_without_content_length_gets_one():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"abc"]

    with serving(app) as server:
        (r,) = request(server, GET)
    assert r.header("Content-Length") == "3" and r.body == b"abc"


def test_no_body_is_sent_with_204_or_304():
    def app(environ, start_response):
        start_response(environ["PATH_INFO"][1:] + " X", [])
        return [b"must not be sent"]

    with serving(app) as server:
        c = connect(server)
        c.sendall(b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\nGET /304 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /200 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = read_until_close(c)
        c.close()
    assert b"must not be sent" in data and data.count(b"must not be sent") == 1
    assert data.index(b"must not be sent") > data.index(b"HTTP/1.1 200")


def test_head_and_body_go_out_in_one_send(monkeypatch):
    # Apart, the body would wait for the ACK of the head (Nagle and delayed
    # ACK: gevent.pywsgi's 40 ms stalls).
    sends: list[bytes] = []
    real = socket.socket.sendall

    def spy(self, data, *args):
        sends.append(bytes(data))
        return real(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", spy)
    with serving() as server:
        (r,) = request(server, GET)
    replies = [d for d in sends if d != GET]
    assert len(replies) == 1 and replies[0].endswith(b"\r\n\r\nHello, world\n")


def test_nagle_is_off_on_served_connections(monkeypatch):
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"].conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return hello(environ, start_response)

    with serving(app) as server:
        request(server, GET)
    assert seen and seen[0] != 0


# -- request bodies ------------------------------------------------------


def test_a_chunked_request_body_is_decoded():
    with serving(echo_body) as server:
        (r,) = request(server, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n")
    assert r.body == b"hello world"


def test_an_unread_body_is_drained_before_the_next_request():
    with serving() as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789" + GET)
        rs, closed = read_responses(c, 2)
        assert [r.status for r in rs] == [200, 200] and not closed
        c.close()


def test_an_unread_body_over_the_drain_limit_closes_the_connection():
    with serving(limits=Limits(max_drain=1000)) as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 2000)
        (r,), _ = read_responses(c, 1)
        assert r.status == 200 and r.header("Connection") == "close"
        assert closed_after(c)
        c.close()


def test_an_unread_chunked_body_over_the_drain_limit_closes_the_connection():
    with serving(limits=Limits(max_drain=1000)) as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        (r,), _ = read_responses(c, 1)
        assert r.status == 200
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        with pytest.raises(OSError):
            for _ in range(1000):  # the server stops reading and closes
                c.sendall(chunk)
                greenline.sleep(0)
        c.close()


def test_100_continue_is_sent_when_the_app_first_reads_the_body():
    with serving(echo_body) as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = c.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.sendall(b"hello")
        (r,), _ = read_responses(c, 1)
        assert r.status == 200 and r.body == b"hello"
        c.close()


def test_100_continue_is_not_sent_when_the_app_does_not_read_and_the_connection_closes():
    with serving() as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        data = read_until_close(c)
        c.close()
    assert b"100 Continue" not in data and status_of(data) == 200
    assert b"Connection: close" in data


def test_an_expectation_other_than_100_continue_gets_417():
    with serving() as server:
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n")
    assert status_of(data) == 417


def test_a_client_closing_in_the_middle_of_the_body_is_an_error_for_the_app():
    seen: list[BaseException] = []
    done = greenline.Event()

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except Exception as e:
            seen.append(e)
            raise
        finally:
            done.set()
        start_response("200 OK", [])
        return [b""]

    with serving(app) as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly this")
        c.shutdown(socket.SHUT_WR)
        assert done.wait(5)
        c.close()
    assert len(seen) == 1 and getattr(seen[0], "status", None) == 400
    assert server.app_errors == 0  # the client's fault, not the app's


# -- refused requests ----------------------------------------------------


def test_content_length_with_transfer_encoding_gets_400_and_the_rest_is_never_answered():
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    with serving() as server:
        data = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
    assert status_of(data) == 400 and data.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in data


def test_two_content_lengths_get_400():
    with serving(echo_body) as server:
        data = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                    b"Content-Length: 6\r\n\r\nhello!")
    assert status_of(data) == 400 and data.count(b"HTTP/1.1") == 1


def test_whitespace_before_a_header_colon_gets_400():
    with serving() as server:
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost : t\r\n\r\n")
    assert status_of(data) == 400


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n",  # obsolete line folding
    b"GET / HTTP/1.1\nHost: t\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n",  # bare CR
    b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",  # NUL in a value
    b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",  # space in the target
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",  # not chunked last
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
])
def test_a_malformed_request_gets_400_and_the_connection_closes(raw):
    with serving() as server:
        data = raw_exchange(server, raw)
    assert status_of(data) == 400 and data.count(b"HTTP/1.1") == 1


def test_http_1_1_without_host_gets_400():
    with serving() as server:
        data = raw_exchange(server, b"GET / HTTP/1.1\r\n\r\n")
    assert status_of(data) == 400


def test_two_host_headers_get_400():
    with serving() as server:
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert status_of(data) == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"])
def test_an_unsupported_http_version_gets_505(version):
    with serving() as server:
        data = raw_exchange(server, b"GET / " + version + b"\r\nHost: t\r\n\r\n")
    assert status_of(data) in (505, 400)
    if version != b"HTTP/1.2":
        assert status_of(data) == 505


def test_a_header_field_over_the_limit_gets_431():
    with serving(limits=Limits(max_field_size=100)) as server:
        ok = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 90 + b"\r\n\r\n")
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 200 + b"\r\n\r\n")
    assert status_of(ok) == 200 and status_of(data) == 431


def test_too_many_header_fields_get_431():
    with serving(limits=Limits(max_fields=10)) as server:
        fields = b"".join(b"X-%d: y\r\n" % i for i in range(11))
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    assert status_of(data) == 431


def test_a_head_over_the_size_limit_gets_431():
    with serving(limits=Limits(max_head_size=1000)) as server:
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 60) for i in range(20))
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    assert status_of(data) == 431


def test_an_endless_head_gets_431_without_growing_memory():
    with serving(limits=Limits(max_head_size=4096)) as server:
        c = connect(server)
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX: ")
        with pytest.raises(OSError):
            for _ in range(10000):
                c.sendall(b"a" * 1024)
                greenline.sleep(0)
        c.close()


def test_a_request_target_over_the_limit_gets_414():
    with serving(limits=Limits(max_request_line=100)) as server:
        data = raw_exchange(server, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status_of(data) == 414


def test_a_content_length_over_the_body_limit_gets_413_without_calling_the_app():
    calls = []

    def app(environ, start_response):
        calls.append(1)
        return hello(environ, start_response)

    with serving(app, limits=Limits(max_body_size=1000)) as server:
        data = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
    assert status_of(data) == 413 and calls == []


def test_a_chunked_body_over_the_limit_gets_413():
    with serving(echo_body, limits=Limits(max_body_size=1000)) as server:
        data = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    + b"200\r\n" + b"x" * 512 + b"\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n0\r\n\r\n")
    assert status_of(data) == 413


def test_a_refused_request_pipelined_behind_a_good_one_is_answered_in_its_turn():
    with serving() as server:
        data = raw_exchange(server, GET + b"GET / HTTP/1.1\r\nHost : bad\r\n\r\n" + GET)
    assert data.count(b"HTTP/1.1 ") == 2
    assert status_of(data) == 200 and data.split(b"\r\n\r\nHello, world\n", 1)[1].startswith(b"HTTP/1.1 400")


def test_pipelining_beyond_the_limit_is_answered_up_to_there_then_closed():
    with serving(limits=Limits(max_pipeline=4)) as server:
        c = connect(server)
        c.sendall(GET * 20)
        data = read_until_close(c)
        c.close()
    answered = data.count(b"HTTP/1.1 200")
    assert 4 <= answered < 20


def test_an_upgrade_request_is_answered_as_a_plain_one_then_closed():
    with serving() as server:
        data = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n"
                                    b"Upgrade: websocket\r\n\r\n" + GET)
    assert data.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in data


# -- timeouts -----------------------------------------------------------


def test_a_slow_head_gets_408_after_the_header_timeout():
    with serving(limits=Limits(header_timeout=0.3)) as server:
        c = connect(server)
        c.sendall(b"GET / HTTP/1.1\r\n")
        t0 = time.monotonic()
        data = b""
        try:
            for i in range(100):  # a field every 50 ms: never a whole head
                c.sendall(b"X-%d: y\r\n" % i)
                greenline.sleep(0.05)
        except OSError:
            pass
        data = read_until_close(c)
        elapsed = time.monotonic() - t0
        c.close()
    assert status_of(data) == 408
    assert 0.25 < elapsed < 2.5


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout():
    with serving(limits=Limits(keepalive_timeout=0.2)) as server:
        c = connect(server)
        c.sendall(GET)
        read_responses(c, 1)
        t0 = time.monotonic()
        assert c.recv(100) == b""  # closed without a response
        assert 0.15 < time.monotonic() - t0 < 2
        c.close()


def test_a_body_that_stops_coming_times_out_with_408():
    with serving(echo_body, limits=Limits(body_timeout=0.2)) as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        data = read_until_close(c)
        c.close()
    assert status_of(data) == 408


def test_stopping_the_server_closes_idle_keep_alive_connections_after_the_last_call():
    server = WSGIServer(("127.0.0.1", 0), hello)
    server.start()
    c = connect(server)
    c.sendall(GET)
    read_responses(c, 1)
    t0 = time.monotonic()
    stopper = greenline.spawn(server.stop, 5)
    assert c.recv(100) == b""  # a clean end of file, our FIN first
    assert LAST_CALL - 0.1 < time.monotonic() - t0 < LAST_CALL + 0.5
    c.close()
    stopper.join(5)
    assert stopper.successful() and time.monotonic() - t0 < LAST_CALL + 0.5


def test_a_request_sent_during_the_last_call_is_answered_with_connection_close():
    server = WSGIServer(("127.0.0.1", 0), hello)
    server.start()
    c = connect(server)
    c.sendall(GET)
    read_responses(c, 1)
    stopper = greenline.spawn(server.stop, 5)
    while not server.closed:  # the server is closing; our next request was "on its way"
        greenline.sleep(0.01)
    c.sendall(GET)
    (r,), closed = read_responses(c, 1)
    assert r.status == 200 and r.header("Connection") == "close"
    assert closed or closed_after(c)
    c.close()
    stopper.join(5)
    assert stopper.successful()


def test_a_refused_upload_gets_its_answer_not_a_reset():
    # The body is still unread when the server answers 413 and ends the
    # connection: a plain close() would send a reset, and the client would
    # read ECONNRESET instead of the answer.
    with serving(limits=Limits(max_body_size=1000)) as server:
        c = connect(server)
        c.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000)
        greenline.sleep(0.1)  # a reset, if there is one, arrives before we read
        data = read_until_close(c)
        c.close()
    assert status_of(data) == 413


def test_no_keep_alive_when_the_keepalive_timeout_is_zero():
    with serving(limits=Limits(keepalive_timeout=0)) as server:
        c = connect(server)
        c.sendall(GET + GET)
        (r,), closed = read_responses(c, 2)
        assert r.status == 200 and r.header("Connection") == "close"
        assert closed or closed_after(c)
        c.close()


def test_a_request_in_flight_when_the_server_stops_is_answered_with_connection_close():
    release = greenline.Event()

    def slow(environ, start_response):
        release.wait(5)
        return hello(environ, start_response)

    server = WSGIServer(("127.0.0.1", 0), slow)
    server.start()
    c = connect(server)
    c.sendall(GET)
    greenline.sleep(0.05)
    stopper = greenline.spawn(server.stop, 5)
    greenline.sleep(0.05)
    release.set()
    (r,), _ = read_responses(c, 1)
    stopper.join(5)
    assert r.status == 200 and r.header("Connection") == "close"
    c.close()

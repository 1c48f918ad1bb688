"""The built-in apps' protocols, and loading a user's ``module:function``."""

from __future__ import annotations

import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import greenline
from greenline import socket
from greenline.servers.apps import BUILTIN_APPS, AppError, echo, load_app, upper


def run_app(app, payload: bytes) -> bytes:
    """Send ``payload`` to ``app`` over a socket pair, half-close, collect the reply."""
    a, b = socket.socketpair()
    try:
        server = greenline.spawn(app, b, None)
        got = []

        def reader():
            while data := a.recv(65536):
                got.append(data)

        r = greenline.spawn(reader)
        a.sendall(payload)
        a.shutdown(socket.SHUT_WR)
        server.get(timeout=10)
        b.close()  # the server closes after the handler returns
        r.get(timeout=10)
        return b"".join(got)
    finally:
        a.close()
        b.close()


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000))
def test_upper_sends_back_every_byte_upper_cased(payload):
    assert run_app(upper, payload) == payload.upper()


def test_upper_only_touches_ascii_letters():
    payload = "héllo wörld ß 123 abc".encode() + bytes(range(256))
    got = run_app(upper, payload)
    assert got == payload.upper()
    assert got.startswith("HéLLO WöRLD ß".encode())  # non-ASCII bytes untouched


def test_echo_and_a_mebibyte_in_one_write():
    payload = bytes(range(256)) * 4096
    assert run_app(echo, payload) == payload
    assert run_app(upper, payload) == payload.upper()


def test_builtins_by_name():
    assert load_app("upper") is upper
    assert load_app("echo") is echo
    assert set(BUILTIN_APPS) == {"upper", "echo"}


def test_module_function_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "gl_userapp.py").write_text(textwrap.dedent("""
        class Handlers:
            @staticmethod
            def shout(sock, address):
                sock.sendall(sock.recv(100).upper() + b"!")

        def handle(sock, address):
            pass

        not_callable = 42
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "gl_userapp", raising=False)
    handle = load_app("gl_userapp:handle")
    assert handle.__name__ == "handle"
    assert sys.path[-1] == str(tmp_path)  # searched last: it cannot shadow a package
    shout = load_app("gl_userapp:Handlers.shout")
    a, b = socket.socketpair()
    a.sendall(b"hey")
    shout(b, None)
    assert a.recv(10) == b"HEY!"
    a.close()
    b.close()
    with pytest.raises(AppError, match="not callable"):
        load_app("gl_userapp:not_callable")
    with pytest.raises(AppError, match="no attribute"):
        load_app("gl_userapp:missing")


def test_bad_specs_are_app_errors():
    with pytest.raises(AppError, match="upper"):
        load_app("uper")
    with pytest.raises(AppError):
        load_app("module_only:")
    with pytest.raises(AppError):
        load_app(":function_only")
    with pytest.raises(AppError, match="cannot import"):
        load_app("gl_no_such_module_anywhere:handle")


def test_an_import_error_inside_the_users_module_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "gl_brokenapp.py").write_text("import gl_dependency_that_is_missing\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gl_brokenapp", raising=False)
    # Not "cannot import gl_brokenapp" alone: what is missing, and where.
    with pytest.raises(AppError) as info:
        load_app("gl_brokenapp:handle")
    message = str(info.value)
    assert "No module named 'gl_dependency_that_is_missing'" in message
    assert f"{tmp_path / 'gl_brokenapp.py'}, line 1" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize(("source", "says", "line"), [
    ("x = 1\ndef handle(sock, address)\n    pass\n", "SyntaxError: expected ':'", 2),
    ("import os\n\nos.environ['GL_NO_SUCH_VARIABLE']\n", "KeyError: 'GL_NO_SUCH_VARIABLE'", 3),
    ("import sys\nsys.exit('no config')\n", "SystemExit: no config", 2),
])
def test_a_module_that_fails_to_import_says_what_and_where(tmp_path, monkeypatch, source, says, line):
    (tmp_path / "gl_failing.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gl_failing", raising=False)
    with pytest.raises(AppError) as info:
        load_app("gl_failing:handle")
    message = str(info.value)
    assert message.startswith("cannot import 'gl_failing': ") and says in message, message
    assert message.endswith(f"({tmp_path / 'gl_failing.py'}, line {line})"), message
    assert "\n" not in message

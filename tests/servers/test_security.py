"""Security basics of ``greenline serve`` and the package (see docs/security.md):
the server listens on loopback unless told otherwise, an APP spec imports the
module it names and nothing else (no evaluation, no shadowing from the
current directory), and nothing in the package unpickles or evaluates data.
"""

from __future__ import annotations

import ast
import os
import select as stdselect
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


# As the `greenline` console script runs: its own directory first on the
# path, not the current one.  (`python -m greenline` puts the current
# directory first, as `python -m` does for any module: see docs/security.md.)
GREENLINE = [sys.executable, "-P", "-m", "greenline"]


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen([*GREENLINE, "serve", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    assert proc.stdout is not None
    ready, _, _ = stdselect.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline().decode() if ready else ""
    return proc, line


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_listens_on_loopback_by_default(tmp_path):
    proc, line = _serve(tmp_path, "upper")
    try:
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        listening = [c for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    finally:
        assert _stop(proc) == 0


def _tattletale(tmp_path: Path, name: str) -> Path:
    """A module that leaves a file behind if anything imports it."""
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").close()

        def handle(sock, address):
            sock.sendall(b"wrong module")
    """))
    return marker


@pytest.mark.parametrize("spec", [
    "app:handle()",
    "app:handle;import tattle",
    "__import__('tattle'):handle",
    "tattle",                      # no colon: only the built-in names
    "app:handle.__globals__",      # an attribute path, but not callable
    "app:missing",
    "app",
    ":handle",
    "app:",
])
def test_an_app_spec_is_a_name_never_code(tmp_path, spec):
    marker = _tattletale(tmp_path, "tattle")
    (tmp_path / "app.py").write_text("def handle(sock, address):\n    pass\n")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run([*GREENLINE, "serve", spec, "--port", "0"], capture_output=True,
                       cwd=tmp_path, env=env, timeout=30, input=b"")
    assert not marker.exists(), f"{spec!r} imported tattle.py"
    assert r.returncode == 2, (spec, r.returncode, r.stderr[-2000:])
    assert b"listening on" not in r.stdout


def test_the_current_directory_cannot_shadow_builtin_apps_or_installed_modules(tmp_path):
    # Files next to where serve runs, named like a built-in app and like a
    # standard module the server itself (or the named app) imports.
    upper_marker = _tattletale(tmp_path, "upper")
    json_marker = _tattletale(tmp_path, "json")
    selectors_marker = _tattletale(tmp_path, "selectors")
    proc, line = _serve(tmp_path, "upper")
    try:
        assert line.startswith("listening on "), line
        port = int(line.rsplit(":", 1)[1])
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"builtin")
            assert c.recv(100) == b"BUILTIN"
    finally:
        assert _stop(proc) == 0
    # An app that imports json gets the standard library's.
    (tmp_path / "usesjson.py").write_text(textwrap.dedent("""
        import json

        def handle(sock, address):
            sock.sendall(json.dumps({"ok": 1}).encode())
    """))
    proc, line = _serve(tmp_path, "usesjson:handle")
    try:
        port = int(line.rsplit(":", 1)[1])
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            assert c.recv(100) == b'{"ok": 1}'
    finally:
        assert _stop(proc) == 0
    assert not upper_marker.exists()
    assert not json_marker.exists()
    assert not selectors_marker.exists()


# Names whose use would turn received bytes into objects or code.
_DANGEROUS_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "yaml"}
# Builtins that run code given as data (json.loads and re.compile do not).
_DANGEROUS_CALLS = {"eval", "exec", "compile", "__import__"}


def test_no_unpickling_or_evaluation_anywhere_in_the_package():
    found = []
    for path in sorted((SRC / "greenline").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            for n in names:
                if n in _DANGEROUS_MODULES:
                    found.append(f"{path.name}:{node.lineno}: imports {n}")
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in _DANGEROUS_CALLS:
                    found.append(f"{path.name}:{node.lineno}: calls {ast.unparse(f)}")
    # The one reviewed use: __import__("select"), a constant name.
    allowed = {"subprocess.py: calls __import__"}
    unexpected = [f for f in found if f"{f.split(':')[0]}: {f.split(': ', 1)[1]}" not in allowed]
    assert not unexpected, unexpected

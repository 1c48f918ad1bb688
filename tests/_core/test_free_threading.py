"""Free-threaded CPython (3.13t): greenline keeps the GIL off.

Importing any greenline module, and running ``greenline serve``, must leave
``sys._is_gil_enabled()`` false: one C extension that has not declared it
can run without the GIL turns it back on for the whole process.  The one
exception is the load client's histograms (``hdrhistogram``'s C extension):
``greenline load`` and the commands that run it in-process accept the GIL.

Skipped on builds with a GIL.  ``scripts/build-free-threaded.sh`` makes the
interpreter; ``.ci/run`` runs the suite on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="not a free-threaded build (scripts/build-free-threaded.sh makes one)",
)

# Modules that import hdrhistogram, whose C extension turns the GIL on: the
# load client and what drives it in-process.  Nothing else may.
GIL_TAKERS = {
    "greenline.tools.report",
    "greenline.tools.load",
    "greenline.tools.demo",
}

IMPORT_ALL = textwrap.dedent("""
    import importlib, json, pkgutil, sys, warnings
    warnings.simplefilter("error", RuntimeWarning)  # the GIL warning names the culprit
    import greenline
    skip = set(json.loads(sys.argv[1]))
    done, turned_on = [], []
    for info in pkgutil.walk_packages(greenline.__path__, "greenline."):
        name = info.name
        if name in skip or name.endswith("__main__") and name != "greenline.__main__":
            continue
        try:
            importlib.import_module(name)
        except RuntimeWarning as e:
            turned_on.append(f"{name}: {e}")
            continue
        except ImportError as e:
            # An optional dependency not installed here (gunicorn, ...).
            done.append(name + " (skipped: " + str(e) + ")")
            continue
        done.append(name)
        if sys._is_gil_enabled():
            turned_on.append(name)
    print(json.dumps({"done": done, "turned_on": turned_on, "gil": sys._is_gil_enabled()}))
""")


def _run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_interpreter_runs_without_the_gil():
    proc = _run("import sys; print(sys._is_gil_enabled())")
    assert proc.stdout.strip() == "False", proc.stderr


def test_importing_every_greenline_module_keeps_the_gil_off():
    proc = _run(IMPORT_ALL, json.dumps(sorted(GIL_TAKERS)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["turned_on"] == [] and out["gil"] is False, out
    assert "greenline.servers.stream" in out["done"] and "greenline.monkey" in out["done"]
    assert "greenline.wsgi.server" in out["done"]


def test_only_the_load_client_turns_the_gil_on():
    # The list above is not a blanket exemption: each of its modules really
    # takes the GIL (through hdrhistogram), so dropping that dependency
    # shows here and the module can leave the list.
    for name in sorted(GIL_TAKERS):
        proc = _run(f"import sys, warnings; warnings.simplefilter('ignore'); import {name}; "
                    "print(sys._is_gil_enabled(), 'hdrh' in sys.modules)")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["True", "True"], (name, proc.stdout)


def test_greenline_serve_runs_its_threads_without_the_gil(tmp_path: Path):
    # An app that answers with the GIL's state, served by the command line
    # with two threads: the worker the client reaches has the GIL off.
    (tmp_path / "gilapp.py").write_text(textwrap.dedent("""
        import sys
        def handle(sock, address):
            while sock.recv(100):
                sock.sendall(b"gil=%d\\n" % sys._is_gil_enabled())
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    env["PYTHONPATH"] = str(tmp_path)
    server = subprocess.Popen([sys.executable, "-W", "error::RuntimeWarning", "-m", "greenline", "serve",
                               "gilapp:handle", "--port", "0", "--threads", "2", "--log-level", "warning"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on" in line, server.stderr.read() if server.stderr else ""
        port = int(line.rsplit(":", 1)[1])
        import socket

        replies = set()
        deadline = time.monotonic() + 20
        for _ in range(8):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"?")
                replies.add(s.recv(100))
            assert time.monotonic() < deadline
        assert replies == {b"gil=0\n"}
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

"""The examples of the README and the docs, run as a reader runs them.

A code block meant to run is marked with an HTML comment on the line
before its fence (invisible on GitHub):

* ``<!-- test: run -->`` before a ``python`` block: the block is a whole
  program, run in a subprocess of its own (in a scratch directory, within
  a time limit) that must exit 0 without a traceback;
* ``<!-- test: run sh -->`` before a ``sh`` block: its lines are commands
  run one after another (``greenline`` and ``python`` are this checkout's);
  a line ending in ``&`` is a server, started and waited for until it
  prints its ``listening on`` line, and stopped (SIGTERM) at the end; port
  8443 is replaced with a free one.

No example may use the network beyond this machine: an audit hook refuses
any connection or name lookup that is not loopback.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = str(ROOT / "src")
DOCS = ["README.md", "docs/serve.md", "docs/structured.md", "docs/load.md"]
MARKED = re.compile(r"^<!-- test: run( sh)? -->\n```(\w+)\n(.*?)^```", re.M | re.S)

# Loaded first in every example's interpreter (a sitecustomize on its path).
NO_INTERNET = textwrap.dedent('''
    import ipaddress, socket, sys

    LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain"}

    def _local(host):
        if isinstance(host, bytes):
            host = host.decode()
        if host in LOCAL_NAMES:
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def _refuse_the_internet(event, args):
        if event == "socket.getaddrinfo" and not _local(args[0]):
            raise PermissionError(f"no internet in the docs' examples: lookup of {args[0]!r}")
        if event == "socket.connect":
            sock, address = args
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
                raise PermissionError(f"no internet in the docs' examples: connect to {address!r}")

    sys.addaudithook(_refuse_the_internet)
''')


def _blocks() -> list[tuple[str, int, str, str]]:
    """(file, line, kind, code) of every marked block."""
    found = []
    for name in DOCS:
        text = (ROOT / name).read_text()
        for m in MARKED.finditer(text):
            line = text.count("\n", 0, m.start()) + 2
            kind = "sh" if m[1] else m[2]
            assert kind == m[2], f"{name}:{line}: a 'run{m[1]}' mark before a {m[2]} block"
            found.append((name, line, kind, m[3]))
    return found


BLOCKS = _blocks()


def _env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_INTERNET)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), SRC]), PYTHONUNBUFFERED="1")


def test_the_examples_that_must_run_are_marked():
    where = [(name, kind) for name, _line, kind, _code in BLOCKS]
    assert where.count(("README.md", "python")) >= 2  # the tour and "beyond gevent"
    assert ("docs/structured.md", "python") in where  # the asyncio bridge
    assert ("docs/load.md", "sh") in where  # the TLS recipe


def test_the_examples_reach_no_further_than_this_machine(tmp_path):
    probe = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n" \
            "except PermissionError as e:\n    print(e)\n"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                       env=_env(tmp_path), cwd=tmp_path)
    assert "no internet" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "line", "kind", "code"), BLOCKS,
                         ids=[f"{name}:{line}" for name, line, _k, _c in BLOCKS])
def test_example_runs(tmp_path, name, line, kind, code):
    if "trustme" in code:
        # Not on every interpreter (no cryptography wheel for free-threaded 3.13).
        pytest.importorskip("trustme", reason="the example makes its certificates with trustme, not installed here")
    if kind == "python":
        script = tmp_path / "example.py"
        script.write_text(code)
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90,
                           env=_env(tmp_path), cwd=tmp_path)
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"{name}:{line}\n{r.stdout}\n{r.stderr}"
    elif kind == "sh":
        _run_commands(tmp_path, code, f"{name}:{line}")
    else:
        pytest.fail(f"{name}:{line}: cannot run a {kind} block")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _argv(words: list[str]) -> list[str]:
    if words[0] == "greenline":
        return [sys.executable, "-m", "greenline", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return words


def _run_commands(tmp_path: Path, code: str, where: str) -> None:
    env = _env(tmp_path)
    code = code.replace("8443", str(_free_port()))
    servers: list[subprocess.Popen[str]] = []
    try:
        for raw in code.replace("\\\n", " ").splitlines():
            line = raw.split("  #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("&"):
                proc = subprocess.Popen(_argv(shlex.split(line[:-1])), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
                servers.append(proc)
                assert proc.stdout is not None
                ready, _, _ = select.select([proc.stdout], [], [], 30)
                first = proc.stdout.readline() if ready else ""
                assert first.startswith("listening on "), f"{where}: {line}: {first!r}"
                continue
            r = subprocess.run(_argv(shlex.split(line)), capture_output=True, text=True, timeout=60,
                               env=env, cwd=tmp_path)
            assert r.returncode == 0, f"{where}: {line}\n{r.stdout}\n{r.stderr}"
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
            try:
                _out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _out, err = proc.communicate()
            assert proc.returncode == 0, f"{where}: a server ended with {proc.returncode}\n{err}"


# -- what a newcomer installs -------------------------------------------------

def test_the_test_extra_pulls_in_no_plotting_and_the_demo_needs_no_extra(tmp_path):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0].lower() for req in extras["test"]}
    assert not names & {"matplotlib", "numpy"}, names
    bench = {re.split(r"[<>=\[ ]", req)[0].lower() for req in extras["bench"]}
    assert {"matplotlib", "gevent"} <= bench
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . && greenline demo" in readme
    assert "pip install -e '.[bench]'" in readme
    # The demo (and the load client it runs) import nothing of the extras.
    blocker = textwrap.dedent("""
        import sys
        EXTRAS = {"matplotlib", "numpy", "pytest", "trustme", "hypothesis", "psutil", "requests",
                  "redis", "gunicorn", "flask", "django", "gevent", "uvloop", "trio"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in EXTRAS:
                    raise ImportError(f"{name} is an extra")
        sys.meta_path.insert(0, Block())
        from greenline.__main__ import main
        sys.exit(main(["demo", "--help"]))
    """)
    r = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=SRC))
    assert r.returncode == 0, r.stderr

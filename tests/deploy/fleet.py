"""Helpers of the fleet tests (tests/deploy/test_fleet.py): processes that are
always cleaned up, network namespaces, and the configurations of
docs/deploy.md.

The balancers' configurations are read from docs/deploy.md itself: each is
the fenced block after a ``<!-- config: NAME -->`` line, and the test only
replaces the documentation's addresses (:data:`DOC_ADDRESSES`) with its own.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOC = ROOT / "docs" / "deploy.md"

#: The addresses written in docs/deploy.md's configurations, by role.
DOC_ADDRESSES = {"frontend": "0.0.0.0:80", "app1": "10.0.0.11:8000", "app2": "10.0.0.12:8000"}


def doc_config(name: str) -> str:
    """The configuration called ``name`` in docs/deploy.md."""
    text = DOC.read_text()
    m = re.search(r"<!-- config: " + re.escape(name) + r" -->\s*```[a-z]*\n(.*?)```", text, re.S)
    if m is None:
        raise LookupError(f"no configuration {name!r} in {DOC}")
    return m.group(1)


def config_for(name: str, addresses: dict[str, str]) -> str:
    """docs/deploy.md's ``name`` with the documentation's addresses replaced."""
    text = doc_config(name)
    for role, doc_addr in DOC_ADDRESSES.items():
        if role in addresses:
            assert doc_addr in text, f"{doc_addr} ({role}) is not in the config {name!r}"
            text = text.replace(doc_addr, addresses[role])
    return text


class Procs:
    """Processes started in their own session; :meth:`close` ends every one
    (and its process group) whatever happened."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], name: str, env: dict[str, str] | None = None,
              netns: str | None = None, stdout: int | None = None) -> subprocess.Popen[bytes]:
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        err = open(self.tmp / f"{name}.err", "wb")
        p = subprocess.Popen(argv, stdout=stdout if stdout is not None else subprocess.DEVNULL,
                             stderr=err, env={**os.environ, **(env or {})}, start_new_session=True)
        err.close()
        p.name = name  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def stderr(self, p: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"{p.name}.err").read_text(errors="replace")  # type: ignore[attr-defined]

    def kill_group(self, p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            # The whole group: workers of a supervisor that is gone, too.
            self.kill_group(p, signal.SIGKILL)
            if p.poll() is None:
                p.wait(5)
            if p.stdout is not None:
                p.stdout.close()


def read_line(p: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line ``p`` prints on stdout, within ``timeout`` seconds."""
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line from {p.args!r} in {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"{p.args!r} exited ({p.poll()}) without a line")
        buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def serve(procs: Procs, name: str, app: str, *args: str, host: str = "127.0.0.1", port: int = 0,
          netns: str | None = None, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """``greenline serve`` a backend of the fleet; (process, port)."""
    argv = [sys.executable, "-m", "greenline", "serve", app, "--host", host, "--port", str(port),
            "--graceful-timeout", "5", *args]
    env = {"FLEET_NAME": name, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **(env or {})}
    p = procs.start(argv, name, env=env, netns=netns, stdout=subprocess.PIPE)
    line = read_line(p, 30)
    assert line.startswith("listening on "), line
    return p, int(line.rsplit(":", 1)[1])


def haproxy(procs: Procs, cfg: str, name: str = "haproxy", netns: str | None = None) -> subprocess.Popen[bytes]:
    path = procs.tmp / f"{name}.cfg"
    path.write_text(cfg)
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    return procs.start(["haproxy", "-f", str(path), "-db"], name, netns=netns)


def nginx(procs: Procs, cfg: str, name: str = "nginx", netns: str | None = None) -> subprocess.Popen[bytes]:
    """nginx in the foreground on ``cfg``, its pid file and error log in the
    test's directory."""
    path = procs.tmp / f"{name}.conf"
    path.write_text(cfg)
    glob = f"daemon off; pid {procs.tmp / name}.pid; error_log {procs.tmp / name}.log;"
    check = subprocess.run(["nginx", "-t", "-c", str(path), "-g", glob], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    return procs.start(["nginx", "-c", str(path), "-g", glob], name, netns=netns)


def client(url: str, n: int, source: str | None = None, netns: str | None = None,
           wait: float = 15.0, headers: list[str] = ()) -> list[dict]:  # type: ignore[assignment]
    """``n`` GETs of ``url``, each on a new connection (from ``source`` if
    given), once the fleet answers; each answer with the client's own end."""
    argv = [sys.executable, str(HERE / "fleet_client.py"), url, "-n", str(n), "--wait", str(wait)]
    if source:
        argv += ["--source", source]
    for h in headers:
        argv += ["-H", h]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=wait + 30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def load(procs: Procs, name: str, url: str, *args: str, netns: str | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """``greenline load URL ARGS --json`` started; (process, its JSON path)."""
    out = procs.tmp / f"{name}.json"
    argv = [sys.executable, "-m", "greenline", "load", url, "--no-progress", "--json", str(out), *args]
    return procs.start(argv, name, netns=netns), out


def lost(result: dict) -> int:
    """Requests without a response of the expected status."""
    return int(result["requests"]) - int(result["verified"])


# -- network namespaces -------------------------------------------------------------


def have_tools(config: str = "haproxy") -> str | None:
    """Why the fleet cannot run ``config``'s balancer here, or None."""
    if config.startswith("haproxy") and shutil.which("haproxy") is None:
        return "haproxy is not installed (apt-get install haproxy; .ci/run installs it)"
    if config.startswith("nginx"):
        if shutil.which("nginx") is None:
            return "nginx is not installed (apt-get install nginx libnginx-mod-stream; .ci/run installs it)"
        if "load_module" in doc_config(config):
            module = re.search(r"load_module (\S+);", doc_config(config))
            if module and not os.path.exists(module.group(1)):
                return f"nginx's stream module is not installed ({module.group(1)}: apt-get install libnginx-mod-stream)"
    return None


class Netns:
    """Network namespaces joined by veth pairs, each end addressed inside its
    namespace only (nothing is added to this host's own interfaces, and
    nothing is routed off the machine).  :meth:`close` deletes them all."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.names: list[str] = []
        self.links = 0

    def ns(self, role: str) -> str:
        name = f"glf{self.tag}-{role}"
        _ip("netns", "add", name)
        self.names.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, a: str, a_addr: str, b: str, b_addr: str, prefix: int = 30) -> None:
        """A veth pair from namespace ``a`` to ``b``, with these addresses."""
        self.links += 1
        ea, eb = f"gv{self.tag}{self.links}a", f"gv{self.tag}{self.links}b"
        _ip("link", "add", ea, "type", "veth", "peer", "name", eb)
        _ip("link", "set", ea, "netns", a)
        _ip("link", "set", eb, "netns", b)
        for ns, dev, addr in ((a, ea, a_addr), (b, eb, b_addr)):
            _ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def close(self) -> None:
        for name in reversed(self.names):
            # Whatever still runs in it first: a namespace with processes in
            # it outlives its name.
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.names.clear()


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = Netns()
    try:
        a, b = probe.ns("pa"), probe.ns("pb")
        probe.link(a, "198.18.255.1", b, "198.18.255.2")
    except OSError as e:
        return f"cannot make network namespaces here: {e}"
    finally:
        probe.close()
    return None

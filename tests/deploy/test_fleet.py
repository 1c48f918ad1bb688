"""A fleet behind a real HAProxy (issue 17): two ``greenline serve --wsgi
--proxy-protocol`` backends and Debian's haproxy, run from the
configuration in docs/deploy.md (send-proxy-v2, health checks).

* requests through HAProxy reach both backends with the client's own address
  and port;
* killing one backend (SIGKILL to its whole process group) mid-run loses at
  most the requests in flight on it;
* a SIGHUP of a backend under load loses none;
* the stream server behind HAProxy in TCP mode gets the client's address;
* load from two hosts at once, merged by ``greenline load merge`` into one
  exact report.

Each runs twice: on loopback (clients on their own loopback addresses,
127.0.0.5 and 127.0.0.6), and, where network namespaces can be made (root,
``ip netns``), with the balancer, each backend and each client a host of its
own (namespaces joined by veth pairs, addresses in 198.18.0.0/15, the
benchmarking range, configured inside the namespaces only).  Processes and
namespaces are removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket as stdsocket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fleet import (
    DOC_ADDRESSES,
    Netns,
    Procs,
    client,
    config_for,
    doc_config,
    haproxy,
    have_tools,
    load,
    lost,
    netns_unavailable,
    nginx,
    serve,
)

CONFIGS = ["haproxy-wsgi", "haproxy-stream", "nginx-wsgi", "nginx-stream"]


def test_the_documented_configurations_are_there_with_their_addresses():
    for name in CONFIGS:
        text = doc_config(name)
        assert DOC_ADDRESSES["app1"] in text and DOC_ADDRESSES["app2"] in text, name
    assert "send-proxy-v2" in doc_config("haproxy-wsgi") and "check" in doc_config("haproxy-wsgi")


def _free_port() -> int:
    with stdsocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """Two backends and a balancer, on loopback or in namespaces."""

    def __init__(self, where: str, tmp: Path) -> None:
        self.where = where
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.net: Netns | None = None
        self.backends: dict[str, subprocess.Popen[bytes]] = {}
        # The balancer's address as each backend sees it.
        self.balancer_seen_as = {"app1": "127.0.0.1", "app2": "127.0.0.1"}
        if where == "netns":
            self.net = Netns()
            try:
                lb = self.net.ns("lb")
                hosts = {}
                for i, name in ((1, "app1"), (2, "app2")):
                    ns = self.net.ns(name)
                    self.net.link(lb, f"198.18.{i}.1", ns, f"198.18.{i}.2")
                    hosts[name] = (f"198.18.{i}.2", ns)
                    self.balancer_seen_as[name] = f"198.18.{i}.1"
                self.clients = []
                for i in (1, 2):
                    ns = self.net.ns(f"cli{i}")
                    self.net.link(lb, f"198.18.1{i}.1", ns, f"198.18.1{i}.2")
                    # (source address, namespace, the balancer's address from there)
                    self.clients.append((f"198.18.1{i}.2", ns, f"198.18.1{i}.1:80"))
            except BaseException:
                self.net.close()
                raise
            self.hosts = hosts
            self.lb_ns: str | None = lb
            self.bind = "0.0.0.0:80"
        else:
            port = _free_port()
            self.hosts = {"app1": ("127.0.0.1", None), "app2": ("127.0.0.1", None)}
            self.lb_ns = None
            self.bind = f"127.0.0.1:{port}"
            self.clients = [("127.0.0.5", None, self.bind), ("127.0.0.6", None, self.bind)]

    def start(self, config: str, app: str, *args: str, forwarded: bool = False) -> None:
        """The backends (``forwarded``: trusting the balancer's
        X-Forwarded-*), then ``config``'s balancer in front of them."""
        reason = have_tools(config)
        if reason:
            pytest.skip(reason)
        addresses = {"frontend": self.bind}
        for name, (host, ns) in self.hosts.items():
            extra = ["--forwarded-allow-ips", self.balancer_seen_as[name]] if forwarded else []
            p, port = serve(self.procs, name, app, *args, *extra, host=host, port=8000 if ns else 0,
                            netns=ns, env={"FLEET_LOG": str(self.tmp / f"{name}.log")})
            self.backends[name] = p
            addresses[name] = f"{host}:{port}"
        run = haproxy if config.startswith("haproxy") else nginx
        self.balancer = run(self.procs, config_for(config, addresses), netns=self.lb_ns)

    def url(self, i: int, path: str = "/") -> str:
        return f"http://{self.clients[i][2]}{path}"

    def get(self, i: int, n: int, path: str = "/", headers: list[str] = ()) -> list[dict]:  # type: ignore[assignment]
        source, ns, _ = self.clients[i]
        try:
            return client(self.url(i, path), n, source=source, netns=ns, headers=headers)
        except AssertionError as e:
            raise AssertionError(f"{e}\nhaproxy ({self.balancer.poll()}): {self.procs.stderr(self.balancer)}") from None

    def load(self, i: int, name: str, path: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        return load(self.procs, name, self.url(i, path), *args, netns=self.clients[i][1])

    def in_flight(self, name: str) -> int:
        """Requests its application had started and not finished."""
        log = (self.tmp / f"{name}.log").read_bytes()
        return log.count(b"S") - log.count(b"E")

    def close(self) -> None:
        try:
            self.procs.close()
        finally:
            if self.net is not None:
                self.net.close()


@pytest.fixture(params=["loopback", "netns"])
def fleet(request, tmp_path):
    if request.param == "netns":
        reason = netns_unavailable()
        if reason:
            pytest.skip(reason)
    f = Fleet(request.param, tmp_path)
    try:
        yield f
    finally:
        f.close()


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)  # polling a state, bounded above


def _result(p: subprocess.Popen[bytes], path: Path, timeout: float) -> dict:
    p.wait(timeout)
    assert path.exists(), f"greenline load wrote no JSON (exit {p.returncode})"
    return dict(json.loads(path.read_text()))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_requests_reach_both_backends_with_the_clients_own_address(fleet):
    fleet.start("haproxy-wsgi", "fleet_app:app", "--wsgi", "--proxy-protocol", "--procs", "2")
    seen = Counter()
    for i in range(len(fleet.clients)):
        answers = fleet.get(i, 12)
        for a in answers:
            assert a["status"] == 200, a
            body = json.loads(a["body"])
            # The client's own address and port, not the balancer's.
            assert [body["remote_addr"], int(body["remote_port"])] == a["client"], (a, body)
            assert body["remote_addr"] == fleet.clients[i][0]
            seen[body["backend"]] += 1
    assert set(seen) == {"app1", "app2"}, seen
    # Health checks (a PROXY v2 LOCAL header every 500 ms) never got a 400:
    # the backends log a bad header as a warning.
    for p in fleet.backends.values():
        assert "bad PROXY protocol header" not in fleet.procs.stderr(p)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_killing_a_backend_loses_at_most_its_requests_in_flight(fleet):
    fleet.start("haproxy-wsgi", "fleet_app:app", "--wsgi", "--proxy-protocol", "--procs", "2")
    fleet.get(0, 1)  # up and answering
    conns = 16
    p, out = fleet.load(0, "load", "/slow", "-c", str(conns), "-d", "4s")
    _wait_for(lambda: fleet.in_flight("app1") > 0 and (fleet.tmp / "app1.log").stat().st_size > 200, 10,
              "app1 under load")
    victim = fleet.backends["app1"]
    fleet.procs.kill_group(victim)  # the host dies: supervisor and workers at once
    victim.wait(10)
    in_flight = fleet.in_flight("app1")
    r = _result(p, out, 30)
    failed = lost(r)
    print(f"\n[{fleet.where}] killed app1 with {in_flight} request(s) in its application: "
          f"{failed} lost of {r['requests']} ({r['status_counts']}, errors {r['errors']})")
    # Each of the load's connections has one request in flight at a time:
    # those on app1 when it died are what may be lost; nothing after.
    assert failed <= conns, r
    assert failed <= in_flight + conns // 2, (failed, in_flight, r)
    assert r["verified"] > 0
    # After the kill everything goes to app2.
    answers = fleet.get(1, 6)
    assert {json.loads(a["body"])["backend"] for a in answers} == {"app2"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_sighup_of_a_backend_under_load_loses_nothing(fleet):
    fleet.start("haproxy-wsgi", "fleet_app:app", "--wsgi", "--proxy-protocol", "--procs", "2")
    fleet.get(0, 1)
    p, out = fleet.load(0, "load", "/slow", "-c", "16", "-d", "5s")
    _wait_for(lambda: (fleet.tmp / "app1.log").stat().st_size > 200, 10, "app1 under load")
    sup = fleet.backends["app1"]
    os.kill(sup.pid, signal.SIGHUP)
    _wait_for(lambda: "reload complete" in fleet.procs.stderr(sup), 15, "app1's reload")
    r = _result(p, out, 30)
    print(f"\n[{fleet.where}] SIGHUP of app1 under load: {lost(r)} lost of {r['requests']} "
          f"({r['status_counts']}, errors {r['errors']})")
    assert lost(r) == 0 and r["ok"], r
    assert sup.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("config", ["haproxy-stream", "nginx-stream"])
def test_the_stream_server_behind_a_balancer_gets_the_clients_address(fleet, config):
    # HAProxy sends version 2 of the PROXY protocol, nginx version 1.
    fleet.start(config, "fleet_app:whoami", "--proxy-protocol")
    seen = Counter()
    for source, ns, lb in fleet.clients:
        host, port = lb.rsplit(":", 1)
        code = (
            "import socket,sys,time\n"
            f"out=[]\nend=time.monotonic()+15\n"
            "while len(out)<8:\n"
            f"    s=socket.socket(); s.settimeout(5); s.bind(({source!r},0))\n"
            f"    try: s.connect(({host!r},{port}))\n"
            "    except OSError:\n"
            "        s.close(); assert time.monotonic()<end; time.sleep(0.05); continue\n"
            "    f=s.makefile('rb'); line=f.readline().decode().split()\n"
            "    s.sendall(b'abc'); assert s.recv(3)==b'ABC'\n"
            "    if line: out.append(' '.join(line+[str(s.getsockname()[1])]))\n"
            "    s.close()\n"
            "print('\\n'.join(out))\n")
        argv = [sys.executable, "-c", code]
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            name, addr, port_seen, my_port = line.split()
            assert (addr, port_seen) == (source, my_port), line
            seen[name] += 1
    assert set(seen) == {"app1", "app2"}, seen


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_load_from_two_hosts_merges_into_one_exact_report(fleet):
    fleet.start("haproxy-wsgi", "fleet_app:app", "--wsgi", "--proxy-protocol", "--procs", "2")
    for i in range(2):
        fleet.get(i, 1)
    runs = [fleet.load(i, f"load{i}", "/", "-c", "8", "-d", "3s") for i in range(2)]
    parts = [_result(p, out, 30) for p, out in runs]
    merged_path = fleet.tmp / "merged.json"
    m = subprocess.run([sys.executable, "-m", "greenline", "load", "merge", str(runs[0][1]), str(runs[1][1]),
                        "--json", str(merged_path)], capture_output=True, text=True, timeout=60)
    assert m.returncode == 0, m.stdout + m.stderr
    merged = json.loads(merged_path.read_text())
    for key in ("requests", "verified", "latency_count", "opened"):
        assert merged[key] == sum(p[key] for p in parts), key
    assert merged["status_counts"] == dict(Counter(parts[0]["status_counts"]) + Counter(parts[1]["status_counts"]))
    assert merged["elapsed"] == max(p["elapsed"] for p in parts)
    assert merged["ok"] and all(p["ok"] for p in parts)
    assert "requests" in m.stdout  # the merged report itself
    # The histogram merge is exact: the merged percentiles lie within the parts'.
    for q in ("p50", "p99"):
        lo = min(p["latency_us"][q] for p in parts)
        hi = max(p["latency_us"][q] for p in parts)
        assert lo <= merged["latency_us"][q] <= hi, q


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_wsgi_behind_nginx_takes_the_client_from_x_forwarded_for(fleet):
    fleet.start("nginx-wsgi", "fleet_app:app", "--wsgi", forwarded=True)
    seen = Counter()
    for i in range(len(fleet.clients)):
        # A client's own X-Forwarded-For is no use to it: nginx appends the
        # real address, and greenline reads from the right.
        for a in fleet.get(i, 8, headers=["X-Forwarded-For: 6.6.6.6"]):
            assert a["status"] == 200, a
            body = json.loads(a["body"])
            assert (body["remote_addr"], body["remote_port"], body["scheme"]) == (fleet.clients[i][0], "0", "http")
            seen[body["backend"]] += 1
    assert set(seen) == {"app1", "app2"}, seen

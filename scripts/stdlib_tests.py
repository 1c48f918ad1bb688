#!/usr/bin/env python
"""Run modules of CPython's own test suite under greenline, unpatched, and under gevent.

Each (module, mode) runs in its own process::

    unpatched   python scripts/stdlib_tests.py --child test.test_X EVENTS
    greenline   python -m greenline.monkey scripts/stdlib_tests.py --child test.test_X EVENTS
    gevent      python -m gevent.monkey scripts/stdlib_tests.py --child test.test_X EVENTS

so the patching is done by each library's own documented entry point, before
anything else is imported.  The child runs the module with ``unittest`` and
appends one JSON line per test start and per outcome to EVENTS, flushed at
once, so the parent knows which test was running if the child hangs or dies.

A child that makes no progress for ``--stall`` seconds is a hang: the parent
saves a ``py-spy dump`` of it, kills it, records the test as ``hang``, and
runs the module again without that test (likewise for a crash), so one hang
costs one test, not the rest of the module.

    python scripts/stdlib_tests.py                      # default modules, all modes
    python scripts/stdlib_tests.py -m test_select -M greenline
    python scripts/stdlib_tests.py --write-docs         # table into docs/compatibility.md

Exit status 1 if a test fails under greenline that is neither in
``tests/monkey/known_failures.txt`` nor failing unpatched too, or if a module hangs
or crashes under greenline.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child":
    # Child: keep the imports before the tests to what unittest needs anyway,
    # so the patching done by the entry point (greenline.monkey or
    # gevent.monkey) is what the tests see.
    import json
    import os
    import time
    import unittest

    class _Recorder(unittest.TextTestResult):
        """A TextTestResult that also writes each event as a JSON line."""

        events: Any = None  # the open events file, set below

        def _emit(self, test: unittest.TestCase, status: str, detail: str = "") -> None:
            rec = {"id": test.id(), "status": status, "t": time.monotonic()}
            if detail:
                rec["detail"] = detail[-4000:]
            # os.write: one unbuffered write per line, nothing lost if we die.
            os.write(self.events, (json.dumps(rec) + "\n").encode())

        def startTest(self, test: unittest.TestCase) -> None:
            self._emit(test, "start")
            super().startTest(test)

        def addSuccess(self, test: unittest.TestCase) -> None:
            super().addSuccess(test)
            self._emit(test, "pass")

        def addFailure(self, test: unittest.TestCase, err: Any) -> None:
            super().addFailure(test, err)
            self._emit(test, "fail", self.failures[-1][1])

        def addError(self, test: unittest.TestCase, err: Any) -> None:
            super().addError(test, err)
            # setUpClass/setUpModule errors come with a _ErrorHolder "test".
            self._emit(test, "error", self.errors[-1][1])

        def addSkip(self, test: unittest.TestCase, reason: str) -> None:
            super().addSkip(test, reason)
            self._emit(test, "skip", reason)

        def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
            super().addExpectedFailure(test, err)
            self._emit(test, "xfail")

        def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
            super().addUnexpectedSuccess(test)
            self._emit(test, "xpass")

        def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
            super().addSubTest(test, subtest, err)
            if err is not None:
                kind = "fail" if issubclass(err[0], test.failureException) else "error"
                self._emit(subtest, kind, self._exc_info_to_string(err, test))

    def _filter(suite: unittest.TestSuite, skip: set[str]) -> unittest.TestSuite:
        out = unittest.TestSuite()
        for t in suite:
            if isinstance(t, unittest.TestSuite):
                out.addTest(_filter(t, skip))
            elif t.id() not in skip:
                out.addTest(t)
        return out

    def _child(argv: list[str]) -> int:
        module, events_path = argv[0], argv[1]
        skip: set[str] = set()
        if len(argv) > 2:
            with open(argv[2]) as f:
                skip = {line.strip() for line in f if line.strip()}
        fd = os.open(events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _Recorder.events = fd
        suite = unittest.defaultTestLoader.loadTestsFromName(module)
        if skip:
            suite = _filter(suite, skip)
        runner = unittest.TextTestRunner(verbosity=2, resultclass=_Recorder, stream=sys.stderr)
        result = runner.run(suite)
        os.write(fd, (json.dumps({"id": "", "status": "done", "ran": result.testsRun}) + "\n").encode())
        return 0

    from typing import Any

    sys.exit(_child(sys.argv[2:]))

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KNOWN = ROOT / "tests" / "monkey" / "known_failures.txt"
DOC = ROOT / "docs" / "compatibility.md"
BEGIN, END = "<!-- stdlib-table:begin -->", "<!-- stdlib-table:end -->"

MODULES = [
    "test_socket", "test_selectors", "test_select", "test_threading", "test_thread",
    "test_queue", "test_timeout", "test_ssl", "test_socketserver",
]
# More modules where patching matters, run with --extra.
EXTRA = ["test_signal", "test_subprocess", "test_httplib", "test_urllib2_localnet"]
MODES = ["unpatched", "greenline", "gevent"]

# Tests that hang whatever the mode on a machine without what they need:
# not run, counted as skipped, in every mode alike.
ENV_SKIPS = {
    # Connects over AF_VSOCK to the host (CID 2): with /dev/vsock present but
    # no hypervisor on the other end (a container), connect() never returns.
    "test.test_socket.ThreadedVSOCKSocketStreamTest.testStream",
}

OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass", "hang", "crash", "known-hang")


@dataclass
class Run:
    module: str
    mode: str
    results: dict[str, str] = field(default_factory=dict)  # test id -> outcome
    details: dict[str, str] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)  # hangs and crashes, described
    seconds: float = 0.0
    complete: bool = False  # the last attempt got to the end of the module

    def count(self, outcome: str) -> int:
        return sum(1 for v in self.results.values() if v == outcome)

    @property
    def bad(self) -> set[str]:
        return {k for k, v in self.results.items() if v in ("fail", "error", "hang", "crash", "known-hang")}


def _command(mode: str, module: str, events: Path, skip_file: Path) -> list[str]:
    target = module if "." in module else f"test.{module}"
    child = [str(Path(__file__).resolve()), "--child", target, str(events), str(skip_file)]
    if mode == "greenline":
        return [sys.executable, "-m", "greenline.monkey", *child]
    if mode == "gevent":
        return [sys.executable, "-m", "gevent.monkey", *child]
    return [sys.executable, *child]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_events(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by a kill
    return out


def _dump(pid: int) -> str:
    """py-spy's view of every thread of a stuck child (and its children)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return "(py-spy not found)"
    try:
        p = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
        return p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(py-spy failed: {e})"


def run_module(module: str, mode: str, workdir: Path, stall: float, limit: float,
               verbose: bool = False, known: dict[str, Known] | None = None) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(module, mode)
    # Tests not to run again: those that hung or crashed, and on a second
    # attempt those the first one got through (the attempt resumes after them).
    skip: set[str] = set(ENV_SKIPS)
    for t in ENV_SKIPS:
        if t.startswith(f"test.{module}."):
            run.results[t] = "skip"
    if mode == "greenline":
        # Hangs we know of (each listed with its cause) cost a stall each:
        # counted as failed without running them.
        for t, k in (load_known() if known is None else known).items():
            if k.hangs and t.startswith(f"{module if '.' in module else 'test.' + module}."):
                run.results[t] = "known-hang"
    start = time.monotonic()
    for attempt in range(50):
        events = workdir / f"{module}.{mode}.{attempt}.jsonl"
        log = workdir / f"{module}.{mode}.{attempt}.log"
        skip_file = workdir / f"{module}.{mode}.{attempt}.skip"
        skip_file.write_text("".join(t + "\n" for t in sorted(skip | set(run.results))))
        events.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
        # Its own directory: the tests make files named after the pid in the cwd.
        cwd = workdir / f"{module}.{mode}.cwd"
        cwd.mkdir(exist_ok=True)
        with open(log, "wb") as out:
            # Own session: the kill reaches whatever the tests forked too.
            # SIGINT back to the default: started from a background job it is
            # ignored, and then Python installs no KeyboardInterrupt handler
            # and the tests of interrupt_main and SIGINT fail in every mode.
            proc = subprocess.Popen(_command(mode, module, events, skip_file), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True,
                                    preexec_fn=_default_sigint)
            hung = False
            last_size, last_change = -1, time.monotonic()
            while proc.poll() is None:
                time.sleep(0.5)
                size = events.stat().st_size if events.exists() else 0
                now = time.monotonic()
                if size != last_size:
                    last_size, last_change = size, now
                if now - last_change > stall or now - start > limit:
                    hung = True
                    dump = _dump(proc.pid)
                    (workdir / f"{module}.{mode}.{attempt}.pyspy.txt").write_text(dump)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stray grandchildren
            except ProcessLookupError:
                pass
        evs = _read_events(events)
        running: str | None = None
        done = False
        for e in evs:
            if e["status"] == "start":
                running = e["id"]
            elif e["status"] == "done":
                done = True
            else:
                prev = run.results.get(e["id"])
                # A test with several subtests: its worst outcome counts.
                if prev in ("fail", "error") and e["status"] in ("pass", "skip"):
                    continue
                if prev == "error" and e["status"] == "fail":
                    continue
                run.results[e["id"]] = e["status"]
                if "detail" in e and e["status"] in ("fail", "error"):
                    run.details[e["id"]] = e["detail"]
                if e["id"] == running:
                    running = None
        if done:
            run.complete = True
            break
        rc = proc.returncode
        what = "hang" if hung else "crash"
        note = f"{what} (attempt {attempt}, exit {rc}) in {running or 'module set-up/tear-down'}; log {log}"
        if hung:
            note += f"; py-spy dump {workdir / f'{module}.{mode}.{attempt}.pyspy.txt'}"
        run.incidents.append(note)
        if verbose:
            print(f"  {module} [{mode}]: {note}", file=sys.stderr)
        if running is None or running in skip or time.monotonic() - start > limit:
            break
        run.results[running] = what
        skip.add(running)
    run.seconds = time.monotonic() - start
    return run


@dataclass
class Known:
    kind: str  # "bug" (to fix) or "difference" (deliberate, documented)
    hangs: bool  # not run under greenline: it would hang (counted as failed)
    reason: str


def load_known(path: Path = KNOWN) -> dict[str, Known]:
    """``test id | bug|difference [, hangs] | reason`` lines."""
    known: dict[str, Known] = {}
    if not path.exists():
        return known
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        flags = [f.strip() for f in parts[1].split(",")] if len(parts) == 3 else []
        if (len(parts) != 3 or not flags or flags[0] not in ("bug", "difference")
                or any(f != "hangs" for f in flags[1:]) or not parts[2]):
            raise SystemExit(f"{path}:{n}: expected 'test id | bug|difference[, hangs] | reason', got {line!r}")
        if parts[0] in known:
            raise SystemExit(f"{path}:{n}: {parts[0]} listed twice")
        known[parts[0]] = Known(flags[0], "hangs" in flags[1:], parts[2])
    return known


def table(runs: dict[tuple[str, str], Run], modules: list[str], modes: list[str]) -> str:
    head = ["module"]
    for m in modes:
        head.append(f"{m}: pass / fail / error / skip")
    versus = "greenline" in modes and "gevent" in modes
    if versus:
        head.append("greenline passes − gevent passes")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for mod in modules:
        row = [f"`{mod}`"]
        for mode in modes:
            r = runs.get((mod, mode))
            if r is None:
                row.append("not run")
                continue
            # A hang or crash is a failure too, whoever's.
            failed = sum(r.count(k) for k in ("fail", "xpass", "known-hang", "hang", "crash"))
            cell = f"{r.count('pass') + r.count('xfail')} / {failed} / {r.count('error')} / {r.count('skip')}"
            extra = [f"{r.count(k)} {k}" for k in ("hang", "crash") if r.count(k)]
            if r.count("known-hang"):
                extra.append(f"{r.count('known-hang')} not run: would hang")
            if not r.complete:
                extra.append("incomplete")
            if extra:
                cell += " (" + ", ".join(extra) + ")"
            row.append(cell)
        g, gv = runs.get((mod, "greenline")), runs.get((mod, "gevent"))
        if versus:
            if g is None or gv is None:
                row.append("")
            else:
                diff = (g.count("pass") + g.count("xfail")) - (gv.count("pass") + gv.count("xfail"))
                row.append(f"{diff:+d}" if diff else "0")
        lines.append("| " + " | ".join(row) + " |")
    total = ["all"]
    for mode in modes:
        rs = [runs[(m, mode)] for m in modules if (m, mode) in runs]
        passed = sum(r.count("pass") + r.count("xfail") for r in rs)
        failed = sum(r.count(k) for r in rs for k in ("fail", "xpass", "known-hang", "hang", "crash"))
        total.append(f"**{passed} / {failed} / {sum(r.count('error') for r in rs)} / "
                     f"{sum(r.count('skip') for r in rs)}**")
    if versus:
        diff = sum((runs[(m, "greenline")].count("pass") + runs[(m, "greenline")].count("xfail"))
                   - (runs[(m, "gevent")].count("pass") + runs[(m, "gevent")].count("xfail"))
                   for m in modules if (m, "greenline") in runs and (m, "gevent") in runs)
        total.append(f"**{diff:+d}**")
    lines.append("| " + " | ".join(total) + " |")
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOC) -> None:
    doc = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: markers {BEGIN} / {END} not found")
    before, rest = doc.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    path.write_text(before + BEGIN + "\n" + text + "\n" + END + after)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--module", action="append", help="test module (test_socket ...); repeatable")
    ap.add_argument("--extra", action="store_true", help=f"also {', '.join(EXTRA)}")
    ap.add_argument("-M", "--mode", action="append", choices=MODES, help="repeatable; default all")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="children at once (default 1)")
    ap.add_argument("--stall", type=float, default=60.0, help="seconds without progress that count as a hang")
    ap.add_argument("--limit", type=float, default=1800.0, help="seconds for one module in one mode")
    ap.add_argument("--run-hangs", action="store_true",
                    help="run the known hangs under greenline too (each costs --stall seconds)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/greenline-stdlib"))
    ap.add_argument("--json", type=Path, help="write every test's outcome per mode here")
    ap.add_argument("--reuse", type=Path, metavar="JSON", action="append", default=[],
                    help="fill in the (module, mode) pairs not run now from this earlier --json output of the"
                         " same interpreter (repeatable; the first file naming a pair wins)")
    ap.add_argument("--table-only", action="store_true", help="run nothing: the table from --reuse files")
    ap.add_argument("--write-docs", action="store_true", help=f"put the table into {DOC.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    modules = args.module or MODULES + (EXTRA if args.extra else [])
    modes = args.mode or MODES
    args.workdir.mkdir(parents=True, exist_ok=True)

    from concurrent.futures import ThreadPoolExecutor

    jobs = [] if args.table_only else [(mod, mode) for mod in modules for mode in modes]
    runs: dict[tuple[str, str], Run] = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as ex:
        known_for_runs = {} if args.run_hangs else load_known()
        futs = {ex.submit(run_module, mod, mode, args.workdir, args.stall, args.limit, True, known_for_runs):
                (mod, mode) for mod, mode in jobs}
        for f in futs:
            r = f.result()
            runs[(r.module, r.mode)] = r
            print(f"{r.module:20} {r.mode:10} {r.seconds:7.1f}s  " +
                  " ".join(f"{k}={r.count(k)}" for k in OUTCOMES if r.count(k)) +
                  ("" if r.complete else "  INCOMPLETE"), flush=True)

    for reuse in args.reuse:
        old = json.loads(reuse.read_text())
        if f"Python {platform.python_version()} " not in old["python"]:
            raise SystemExit(f"{reuse} is from {old['python']}, not Python {platform.python_version()}")
        for key, rec in old["runs"].items():
            mod, mode = key.split(":")
            # Only what this run did not do; the first file naming a pair wins.
            if mod in modules and (mod, mode) not in runs:
                r = Run(mod, mode, rec["results"], rec.get("details", {}), rec["incidents"], rec["seconds"],
                        rec["complete"])
                runs[(mod, mode)] = r
    modes = [m for m in MODES if any(k[1] == m for k in runs)]

    version = f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})"
    text = table(runs, modules, modes)
    print(f"\n{version}\n\n{text}\n")

    known = load_known()
    status = 0
    for mod in modules:
        g, u, gv = runs.get((mod, "greenline")), runs.get((mod, "unpatched")), runs.get((mod, "gevent"))
        if g is None:
            continue
        for test in sorted(g.bad):
            if test in known:
                k = known[test]
                print(f"known ({k.kind}{', hangs' if k.hangs else ''}): {test}")
                continue
            if u is not None and test in u.bad:
                print(f"environment: {test} fails unpatched too")
                continue
            status = 1
            also = "" if gv is None else f" (gevent: {gv.results.get(test, 'not run')})"
            print(f"NEW FAILURE under greenline: {test}: {g.results[test]}{also}")
            detail = g.details.get(test, "").strip().splitlines()
            if detail:
                print("    " + detail[-1])
        for inc in g.incidents:
            status = 1
            print(f"{mod} greenline: {inc}")
        if gv is not None:
            fewer = (g.count("pass") + g.count("xfail")) - (gv.count("pass") + gv.count("xfail"))
            if fewer < 0:
                print(f"{mod}: greenline passes {-fewer} fewer tests than gevent")
    if "greenline" in modes:
        ran = {t for (mod, mode), r in runs.items() if mode == "greenline" for t in r.results}
        for test in sorted(known):
            mod = test.split(".")[1] if test.startswith("test.") else ""
            if mod in modules and test in ran and runs[(mod, "greenline")].results.get(test) not in (
                    "fail", "error", "hang", "crash", "known-hang"):
                print(f"stale known failure (passes now): {test}")

    if args.json:
        args.json.write_text(json.dumps({
            "python": version,
            "runs": {f"{m}:{mode}": {"results": r.results, "incidents": r.incidents, "seconds": r.seconds,
                                     "complete": r.complete, "details": r.details}
                     for (m, mode), r in runs.items()},
        }, indent=1))
    if args.write_docs:
        write_docs(f"{version}, {time.strftime('%Y-%m-%d', time.gmtime())}. Passed / failed / errors /"
                   f" skipped per module; a hang or crash counts as failed (the module is then resumed from"
                   f" the next test).\n\n{text}")
    return status


if __name__ == "__main__":
    sys.exit(main())

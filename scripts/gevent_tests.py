#!/usr/bin/env python3
"""Run gevent's own API tests on greenline, under ``greenline run --as-gevent``.

gevent's source distribution is pip-downloaded at run time into a cache
(``~/.cache/greenline/gevent-VERSION``; nothing of gevent's is kept in this
repository), and each test file runs in a process of its own::

    greenline run --as-gevent scripts/gevent_tests.py --child SRC test__event.py

so ``import gevent`` there is greenline's.  The child supplies what gevent's
test harness (``gevent.testing``, ``gevent.tests``) imports from gevent's
private modules (a few small stand-ins, defined below), loads the file with
``unittest`` and reports each test's outcome as it happens, so a hang or a
crash costs the tests not yet run, which count as failed.

    python scripts/gevent_tests.py                    # every file of the issue
    python scripts/gevent_tests.py test__event.py     # some
    python scripts/gevent_tests.py -j 2 --write-docs  # refresh docs/gevent.md's table
    python scripts/gevent_tests.py test__queue.py -v  # each failure's traceback
    python scripts/gevent_tests.py --json run.json    # keep the outcomes; --reuse run.json reports them

Exit status: 0 if at least --threshold (90%) of the tests run pass.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "gevent.md"
VERSION = "26.9.0"

# The API test files issue 14 names (test__monkey* expands to every file
# of that prefix).
FILES = [
    "test__event.py", "test__queue.py", "test__pool.py", "test__greenlet.py", "test__timeout.py",
    "test__semaphore.py", "test__local.py", "test__joinall.py", "test__socket.py",
    "test__server.py", "test__select.py", "test__subprocess.py", "test__threadpool.py",
    "test__monkey*", "test__threading_2.py", "test__lock.py", "test__ssl.py",
    "test__makefile_ref.py", "test__pywsgi.py",
]

FILE_TIMEOUT = 300.0  # seconds for one file, all its tests
STALL = 60.0  # seconds without a test finishing: the file hangs


# ---------------------------------------------------------------------------
# Fetching gevent's source


def cache_dir(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "greenline" / f"gevent-{version}"


def fetch(version: str, timeout: float | None = None) -> Path:
    """The unpacked sdist's ``src/gevent`` directory, downloading it once
    (each pip run bounded by ``timeout`` seconds, if given)."""
    target = cache_dir(version)
    src = target / f"gevent-{version}" / "src" / "gevent"
    if (src / "tests").is_dir():
        return src
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"downloading gevent {version}'s source (once, into {target})...", file=sys.stderr)
        # --no-build-isolation: pip still reads the sdist's metadata, but
        # does not install a build environment to do it.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", f"gevent=={version}", "-d", tmp]
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=timeout).returncode != 0:
            cmd.remove("--no-build-isolation")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=timeout)
        archive = next(Path(tmp).glob("gevent-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    return src


def expand(names: list[str], tests_dir: Path) -> list[str]:
    out: list[str] = []
    for name in names:
        if "*" in name:
            out.extend(sorted(p.name for p in tests_dir.glob(name + ("" if name.endswith(".py") else ".py"))))
        else:
            out.append(name if name.endswith(".py") else name + ".py")
    return [n for i, n in enumerate(out) if n not in out[:i]]


# ---------------------------------------------------------------------------
# The child: one test file, under greenline run --as-gevent


def child(src: Path, filename: str, out_path: str) -> int:
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import unittest

    out = open(out_path, "a", buffering=1)

    def record(**fields: object) -> None:
        out.write(json.dumps(fields) + "\n")

    class HarnessFinder(importlib.abc.MetaPathFinder):
        """gevent.testing and gevent.tests from the sdist; stand-ins for the
        private modules the harness imports."""

        def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
            # ``from gevent import X`` imports X under the package's own
            # name, greenline.gevent.X.
            if fullname.startswith("greenline.gevent."):
                alias = fullname[len("greenline."):]
                if alias in STANDINS:
                    return importlib.machinery.ModuleSpec(fullname, StandIn(alias))
            if fullname in STANDINS:
                return importlib.machinery.ModuleSpec(fullname, StandIn(fullname))
            for pkg in ("gevent.testing", "gevent.tests"):
                if fullname == pkg or fullname.startswith(pkg + "."):
                    rel = fullname.split(".")[1:]
                    base = src.joinpath(*rel)
                    if (base / "__init__.py").exists():
                        return importlib.util.spec_from_file_location(
                            fullname, base / "__init__.py", submodule_search_locations=[str(base)])
                    if base.with_suffix(".py").exists():
                        return importlib.util.spec_from_file_location(fullname, base.with_suffix(".py"))
                    return None
            return None

    class StandIn(importlib.abc.Loader):
        def __init__(self, name: str) -> None:
            self.name = name

        def create_module(self, spec):  # type: ignore[no-untyped-def]
            return None

        def exec_module(self, module):  # type: ignore[no-untyped-def]
            exec(STANDINS[self.name], module.__dict__)

    sys.meta_path.insert(0, HarnessFinder())
    tests_dir = src / "tests"
    sys.path.insert(0, str(tests_dir))
    os.chdir(tests_dir)
    name = filename[:-3]
    text = (tests_dir / filename).read_text()
    if "TestCase" not in text and not re.search(r"^class \w*Test\w*\(", text, re.M):
        # A script (gevent's runner judges it by its exit status): one test.
        return run_script(tests_dir / filename, record)
    try:
        # ``from gevent import testing`` looks for the attribute first.
        import gevent.testing
        import gevent.tests

        import greenline.gevent

        greenline.gevent.testing = gevent.testing  # type: ignore[attr-defined]
        greenline.gevent.tests = gevent.tests  # type: ignore[attr-defined]

        spec = importlib.util.spec_from_file_location(name, tests_dir / filename)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    except BaseException as e:  # the file cannot even be imported
        import traceback

        record(event="import_error", error=f"{type(e).__name__}: {e}",
               tb="".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:])
        return 1

    def flatten(s):  # type: ignore[no-untyped-def]
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from flatten(t)
            else:
                yield t

    tests = list(flatten(suite))
    record(event="plan", tests=[t.id() for t in tests])

    class Recorder(unittest.TestResult):
        def _tb(self, err):  # type: ignore[no-untyped-def]
            return self._exc_info_to_string(err, self._current)[-2000:]

        def startTest(self, test):  # type: ignore[no-untyped-def]
            self._current = test
            self._failed = False
            super().startTest(test)

        def addError(self, test, err):  # type: ignore[no-untyped-def]
            if not self._failed:
                record(event="result", id=test.id(), outcome="error", tb=self._tb(err))
            self._failed = True

        def addFailure(self, test, err):  # type: ignore[no-untyped-def]
            if not self._failed:
                record(event="result", id=test.id(), outcome="fail", tb=self._tb(err))
            self._failed = True

        def addSubTest(self, test, subtest, err):  # type: ignore[no-untyped-def]
            if err is not None and not self._failed:
                outcome = "fail" if issubclass(err[0], test.failureException) else "error"
                record(event="result", id=test.id(), outcome=outcome, tb=self._tb(err))
                self._failed = True

        def addSkip(self, test, reason):  # type: ignore[no-untyped-def]
            record(event="result", id=test.id(), outcome="skip", tb=reason)
            self._failed = True

        def addExpectedFailure(self, test, err):  # type: ignore[no-untyped-def]
            record(event="result", id=test.id(), outcome="pass")
            self._failed = True

        def addUnexpectedSuccess(self, test):  # type: ignore[no-untyped-def]
            record(event="result", id=test.id(), outcome="fail", tb="unexpected success")
            self._failed = True

        def stopTest(self, test):  # type: ignore[no-untyped-def]
            if not self._failed:
                record(event="result", id=test.id(), outcome="pass")
            super().stopTest(test)

    result = Recorder()
    # Class and module fixtures (setUpClass...) need the suite, not a loop
    # over the tests: run it whole, the recorder writes as it goes.
    suite.run(result)
    record(event="done")
    return 0


def run_script(path: Path, record) -> int:  # type: ignore[no-untyped-def]
    import runpy
    import traceback

    test_id = f"{path.stem} (run as a script)"
    record(event="plan", tests=[test_id])
    sys.argv[:] = [str(path)]
    try:
        runpy.run_path(str(path), run_name="__main__")
        outcome, tb = "pass", ""
    except SystemExit as e:
        ok = e.code in (None, 0)
        outcome, tb = ("pass", "") if ok else ("fail", f"exit status {e.code!r}")
    except BaseException as e:
        outcome, tb = "error", "".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:]
    record(event="result", id=test_id, outcome=outcome, tb=tb)
    record(event="done")
    return 0


# What gevent.testing imports from gevent's private modules: small stand-ins
# with the same names, meaning what they mean on greenline.
STANDINS = {
    "gevent._compat": """
import sys, time
PY3 = True
PYPY = hasattr(sys, 'pypy_version_info')
WIN = sys.platform.startswith('win')
LINUX = sys.platform.startswith('linux')
OSX = sys.platform == 'darwin'
PURE_PYTHON = True
perf_counter = time.perf_counter
get_clock_info = time.get_clock_info
def get_this_psutil_process():
    return None
def reraise(t, value, tb=None):
    if value.__traceback__ is not tb and tb is not None:
        raise value.with_traceback(tb)
    raise value
def fspath(p):
    import os
    return os.fspath(p)
""",
    "gevent._util": """
class LazyOnClass(object):
    @classmethod
    def lazy(cls, cls_dict, func):
        cls_dict[func.__name__] = cls(func)
    def __init__(self, func, name=None):
        self.name = name or func.__name__
        self.func = func
    def __get__(self, inst, klass):
        if inst is None:
            return self
        val = self.func(inst)
        setattr(klass, self.name, val)
        return val
""",
    "gevent._hub_local": """
from greenline._core.hub import get_hub, get_hub_if_exists, Hub
def get_hub_class():
    return Hub
def get_loop():
    h = get_hub_if_exists()
    return h.loop if h is not None else None
""",
    "gevent._config": """
def validate_bool(value):
    if isinstance(value, str):
        value = value.lower().strip()
        if value in ('1', 'true', 'on', 'yes'):
            return True
        if value in ('0', 'false', 'off', 'no', ''):
            return False
        raise ValueError('Invalid boolean string: %r' % (value,))
    return bool(value)
""",
    "gevent.core": """
from greenline._core.loop import Loop as loop, Callback as callback
""",
}


# ---------------------------------------------------------------------------
# The parent: run the files, gather, report


def run_file(src: Path, filename: str, verbose: bool) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as f:
        out_path = f.name
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p)
    env.setdefault("GEVENTTEST_LARGE_TIMEOUT", "30")
    cmd = [sys.executable, "-m", "greenline", "run", "--as-gevent", str(Path(__file__).resolve()),
           "--child", str(src), filename, "--out", out_path]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    last_size = -1
    last_change = time.monotonic()
    status = "done"
    while proc.poll() is None:
        time.sleep(0.5)
        size = os.path.getsize(out_path)
        now = time.monotonic()
        if size != last_size:
            last_size, last_change = size, now
        if now - last_change > STALL or now - started > FILE_TIMEOUT:
            status = "hang"
            os.killpg(proc.pid, 9)
            proc.wait()
            break
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    plan: list[str] = []
    results: dict[str, dict] = {}
    import_error = None
    with open(out_path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec["event"] == "plan":
                plan = rec["tests"]
            elif rec["event"] == "result":
                results.setdefault(rec["id"], rec)
            elif rec["event"] == "import_error":
                import_error = rec
    os.unlink(out_path)
    if status == "done" and proc.returncode not in (0, None) and not import_error and len(results) < len(plan):
        status = f"crash ({proc.returncode})"
    counts = {"pass": 0, "fail": 0, "error": 0, "skip": 0, "lost": 0}
    failures = []
    for test_id in plan:
        rec = results.get(test_id)
        if rec is None:
            counts["lost"] += 1
            failures.append((test_id, status))
            continue
        counts[rec["outcome"]] += 1
        if rec["outcome"] in ("fail", "error"):
            failures.append((test_id, rec.get("tb", "")))
    return {"file": filename, "status": status if not import_error else "import error",
            "counts": counts, "failures": failures, "import_error": import_error,
            "stderr_tail": stderr[-3000:], "seconds": round(time.monotonic() - started, 1)}


def ran(c: dict) -> int:
    return c["pass"] + c["fail"] + c["error"] + c["lost"]


def table(rows: list[dict]) -> str:
    lines = ["| file | run | passed | failed | errors | not finished | skipped | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    total = {"pass": 0, "fail": 0, "error": 0, "skip": 0, "lost": 0}
    for r in rows:
        c = r["counts"]
        note = ""
        if r["import_error"]:
            note = "cannot import: " + r["import_error"]["error"].splitlines()[0][:80]
        elif r["status"] != "done":
            note = r["status"]
        lines.append(f"| `{r['file']}` | {ran(c)} | {c['pass']} | {c['fail']} | {c['error']} | "
                     f"{c['lost']} | {c['skip']} | {note} |")
        for k in total:
            total[k] += c[k]
    n = ran(total)
    pct = 100.0 * total["pass"] / n if n else 0.0
    lines.append(f"| **all** | **{n}** | **{total['pass']} ({pct:.1f}%)** | {total['fail']} | "
                 f"{total['error']} | {total['lost']} | {total['skip']} | |")
    return "\n".join(lines)


def write_docs(rows: list[dict], version: str) -> None:
    text = DOC.read_text()
    begin, end = "<!-- gevent-table:begin -->", "<!-- gevent-table:end -->"
    stamp = (f"gevent {version}'s tests, Python {sys.version.split()[0]}, "
             f"{time.strftime('%Y-%m-%d')}; a file that cannot be imported runs no test.")
    new = f"{begin}\n{stamp}\n\n{table(rows)}\n{end}"
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), new, text, flags=re.S)
    DOC.write_text(text)


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        src, filename = Path(sys.argv[i + 1]), sys.argv[i + 2]
        out = sys.argv[sys.argv.index("--out") + 1]
        return child(src, filename, out)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="test files (default: the issue's list)")
    parser.add_argument("--version", default=VERSION, help="gevent release (default %(default)s)")
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each failure")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--write-docs", action="store_true", help="refresh docs/gevent.md's table")
    parser.add_argument("--threshold", type=float, default=90.0)
    parser.add_argument("--reuse", metavar="JSON", help="report an earlier --json run instead of running")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if shutil.which("pip") is None and not cache_dir(args.version).exists():
        parser.error("pip is needed to download gevent's source")
    if args.reuse:
        rows = json.loads(Path(args.reuse).read_text())
        print(table(rows))
        if args.write_docs:
            write_docs(rows, args.version)
        return 0
    src = fetch(args.version)
    files = expand(args.files or FILES, src / "tests")
    missing = [f for f in files if not (src / "tests" / f).exists()]
    if missing:
        parser.error(f"no such test file in gevent {args.version}: {', '.join(missing)}")
    rows: list[dict] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        for row in ex.map(lambda f: run_file(src, f, args.verbose), files):
            c = row["counts"]
            print(f"{row['file']:32} run {ran(c):4}  pass {c['pass']:4}  fail {c['fail']:3}  "
                  f"error {c['error']:3}  lost {c['lost']:3}  skip {c['skip']:3}  "
                  f"{row['status']}  {row['seconds']}s", flush=True)
            if args.verbose:
                if row["import_error"]:
                    print(row["import_error"]["tb"])
                for test_id, tb in row["failures"]:
                    print(f"  --- {test_id}\n{tb}")
                if row["status"] != "done":
                    print(row["stderr_tail"])
            rows.append(row)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.write_docs:
        write_docs(rows, args.version)
    total = sum(r["counts"]["pass"] for r in rows)
    n = sum(ran(r["counts"]) for r in rows)
    return 0 if n and 100.0 * total / n >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())

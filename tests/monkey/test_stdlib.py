"""CPython's own test suite under ``greenline.monkey.patch_all()``: the quick
subset CI runs (the full runner is ``scripts/stdlib_tests.py``; its table is
in docs/compatibility.md, with gevent beside greenline).

Each module runs twice in child processes, unpatched and patched, on this
interpreter.  A test that fails patched must fail unpatched too (this
machine lacks something it needs) or be in tests/monkey/known_failures.txt with its
reason; no module may hang or crash.  These take a while (slow); they belong
under a ``stdlib`` marker too once conftest registers one.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.stdlib]

_spec = importlib.util.spec_from_file_location(
    "stdlib_tests", Path(__file__).resolve().parents[2] / "scripts" / "stdlib_tests.py")
assert _spec is not None and _spec.loader is not None
runner = importlib.util.module_from_spec(_spec)
sys.modules["stdlib_tests"] = runner  # dataclasses look their module up by name
_spec.loader.exec_module(runner)

# Quick ones: together about a minute on one core.
QUICK = ["test_select", "test_selectors", "test_timeout", "test_queue", "test_thread", "test_httplib",
         "test_urllib2_localnet"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module", QUICK)
def test_module_under_greenline(module: str, tmp_path: Path) -> None:
    known = runner.load_known()
    plain = runner.run_module(module, "unpatched", tmp_path, stall=60, limit=240)
    green = runner.run_module(module, "greenline", tmp_path, stall=60, limit=240)
    assert plain.complete, plain.incidents
    assert green.complete and not green.incidents, green.incidents
    unexplained = sorted(t for t in green.bad if t not in known and t not in plain.bad)
    assert not unexplained, {t: green.details.get(t, "")[-600:] for t in unexplained}
    stale = sorted(t for t in known if t.startswith(f"test.{module}.") and t in green.results
                   and t not in green.bad)
    assert not stale, f"passing now, take them out of tests/monkey/known_failures.txt: {stale}"


@pytest.mark.timeout(120)
def test_the_runner_survives_a_hang_and_a_crash_and_goes_on(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # A module whose second test hangs and whose third kills its process:
    # the runner must record both, dump the hung one, and still run the rest.
    pkg = tmp_path / "fakemods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "test_fake.py").write_text(textwrap.dedent("""
        import os, signal, time, unittest

        class T(unittest.TestCase):
            def test_a_passes(self):
                pass

            def test_b_hangs(self):
                time.sleep(3600)

            def test_c_crashes(self):
                os.kill(os.getpid(), signal.SIGSEGV)

            def test_d_fails(self):
                self.assertEqual(1, 2)

            def test_e_passes_after(self):
                time.sleep(0.01)
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    run = runner.run_module("fakemods.test_fake", "greenline", tmp_path / "work", stall=3, limit=60)
    r = {k.rsplit(".", 1)[1]: v for k, v in run.results.items()}
    assert r == {"test_a_passes": "pass", "test_b_hangs": "hang", "test_c_crashes": "crash",
                 "test_d_fails": "fail", "test_e_passes_after": "pass"}
    assert run.complete
    assert len(run.incidents) == 2
    assert "hang" in run.incidents[0] and "test_b_hangs" in run.incidents[0]
    dumps = list((tmp_path / "work").glob("*.pyspy.txt"))
    assert len(dumps) == 1

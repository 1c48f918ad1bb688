"""greenline lab: the seed's experiments, scaled down, print their conclusions."""

from __future__ import annotations

import io

import pytest

from greenline.__main__ import main
from greenline.tools import lab


def test_switch_measures_every_version_and_concludes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "switch", "-n", "30000", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "30,000 steps per function, best of 2 runs each" in out
    for name in ("serial (func1 then func2)", "generator yield", "greenlet switch", "greenline sleep(0)"):
        assert name in out
    # One line per switching kind with its cost per round trip and per switch.
    assert out.count("ns per switch") == 3
    assert "Conclusion: " in out


def test_switching_without_io_costs_more_than_serial() -> None:
    # The greenlet and hub round trips cost hundreds of ns against tens for
    # a loop step: far beyond any noise, even on a loaded machine.
    times = lab.switch_experiment(30000, 2, out=io.StringIO())
    assert times["greenlet"] > times["serial"]
    assert times["sleep0"] > times["serial"]


def _fixed(monkeypatch: pytest.MonkeyPatch, **seconds: float) -> None:
    for name, value in seconds.items():
        monkeypatch.setattr(lab, name, lambda n, v=value: v)


def test_conclusion_is_drawn_from_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed(monkeypatch, serial=1.0, with_yield=1.5, with_greenlet=3.0, with_sleep0=9.0)
    out = io.StringIO()
    lab.switch_experiment(1_000_000, 1, out=out)
    text = out.getvalue()
    assert "Conclusion: serial is the fastest" in text
    assert "greenline sleep(0) most (9.00x serial)" in text
    # (3.0 - 1.0) s over 1,000,000 round trips of 2 switches: 1000 ns each.
    assert "1000 ns per switch" in text


def test_a_run_that_does_not_show_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed(monkeypatch, serial=1.0, with_yield=0.9, with_greenlet=3.0, with_sleep0=9.0)
    out = io.StringIO()
    lab.switch_experiment(1000, 1, out=out)
    text = out.getvalue()
    assert "too short or too noisy" in text
    assert "generator yield" in text.split("Conclusion:")[1]
    assert "serial is the fastest" not in text


@pytest.mark.timeout(30)
def test_sleepers_take_the_sum_serially_and_the_longest_as_green_threads(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "sleep", "--scale", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "total serially:" in out and "(the sum of the sleeps: 1 s)" in out
    assert "total as green threads:" in out and "(the longest sleep: 0.5 s)" in out
    assert "Conclusion: the green threads took" in out
    # The green threads started together: all three start before any wakes.
    green = out.split("as green threads:")[1]
    assert green.index("heiheihei starts") < green.index("heng wakes up")


def test_sleep_returns_both_totals() -> None:
    t_serial, t_green = lab.sleep_experiment(0.05, out=io.StringIO())
    assert t_serial >= 0.5 - 0.01  # 2 + 3 + 5, times 0.05
    assert 0.25 - 0.01 <= t_green < t_serial


def test_lab_needs_an_experiment_and_sane_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab"]) == 2
    assert main(["lab", "switch", "-n", "0"]) == 2
    assert main(["lab", "sleep", "--scale", "-1"]) == 2
    assert "must" in capsys.readouterr().err

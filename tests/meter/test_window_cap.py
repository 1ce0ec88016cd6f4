"""The cap on distinct window names in the per-name totals (`Meter.window_stats`, the values of
the Prometheus ``window`` label): later names are counted as ``other``, no joule is lost, and one
warning says how to raise the cap."""

from __future__ import annotations

import logging
import math

import pytest

from meter import ConfigError, Meter
from meter.core import DEFAULT_MAX_WINDOWS, OTHER_WINDOWS, options_from_env
from meter.testing.replay import advance


def cap_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "meter" and r.levelno == logging.WARNING and "max_windows" in r.getMessage()
    ]


def test_ten_thousand_names_keep_max_windows_plus_other_and_every_joule(clocked_meter, caplog):
    m, clock = clocked_meter(300.0, 150.0)
    assert m.max_windows == DEFAULT_MAX_WINDOWS == 100
    results = []
    with caplog.at_level(logging.WARNING, logger="meter"):
        for i in range(10_000):
            with m.measure(f"request-{i}") as w:
                advance(m, clock, 0.001 * (1 + i % 7))  # windows of different energies
            results.append(w)
        stats = m.window_stats
    assert len(stats) == m.max_windows + 1
    assert set(stats) == {f"request-{i}" for i in range(100)} | {OTHER_WINDOWS}
    assert all(stats[f"request-{i}"].count == 1 for i in range(100))
    assert stats[OTHER_WINDOWS].count == 9_900
    # Totals preserved: the names together hold every window's joules, seconds and count.
    energies = [w.result.energy_j for w in results]
    assert all(e > 0 for e in energies)
    assert math.fsum(s.energy_j for s in stats.values()) == pytest.approx(math.fsum(energies))
    assert math.fsum(s.seconds for s in stats.values()) == pytest.approx(
        math.fsum(w.result.duration_s for w in results)
    )
    assert sum(s.count for s in stats.values()) == 10_000
    # A window's own result keeps its name.
    assert results[-1].result.name == "request-9999"
    (warning,) = cap_warnings(caplog)
    assert "'request-100'" in warning and "max_windows=100" in warning
    assert "Meter(max_windows=...)" in warning and "METER_MAX_WINDOWS" in warning


def test_names_kept_go_on_counting_under_their_own_name(clocked_meter, caplog):
    m, clock = clocked_meter(300.0, max_windows=2)
    with caplog.at_level(logging.WARNING, logger="meter"):
        for name in ("a", "b", "c", "a", "d", "b", OTHER_WINDOWS, "e"):
            with m.measure(name):
                advance(m, clock, 0.01)
    counts = {name: s.count for name, s in m.window_stats.items()}
    assert counts == {"a": 2, "b": 2, OTHER_WINDOWS: 4}
    assert len(cap_warnings(caplog)) == 1


def test_a_window_named_other_is_no_way_around_the_cap(clocked_meter):
    m, clock = clocked_meter(300.0, max_windows=2)
    for name in (OTHER_WINDOWS, "a", "b", "c"):
        with m.measure(name):
            advance(m, clock, 0.01)
    counts = {name: s.count for name, s in m.window_stats.items()}
    assert counts == {OTHER_WINDOWS: 2, "a": 1, "b": 1}  # at most max_windows + 1 names


def test_the_cap_from_the_environment():
    assert options_from_env({"METER_MAX_WINDOWS": " 500 "}) == {"max_windows": 500}
    assert "max_windows" not in options_from_env({})
    for text, message in (("0", ">= 1"), ("-3", ">= 1"), ("many", "whole number")):
        with pytest.raises(ConfigError, match=message) as raised:
            options_from_env({"METER_MAX_WINDOWS": text})
        assert raised.value.setting == "METER_MAX_WINDOWS"


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "100"])
def test_a_bad_cap_fails_fast(bad):
    with pytest.raises(ConfigError, match="max_windows must be a whole number") as raised:
        Meter(devices=[], carbon=False, max_windows=bad)
    assert raised.value.setting == "max_windows"

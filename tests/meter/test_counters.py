"""The energy-counter check (meter.devices.counters) on made-up sequences with explicit times."""

from __future__ import annotations

import math

import pytest

from meter.devices.counters import MARGIN, REBASE_AFTER, SLACK_S, CounterValidator
from meter.errors import BadReading, DeviceError

#: RAPL's usual wrap, in joules.
RAPL_RANGE_J = 262_143.328_850


def steady(
    v: CounterValidator, raw: float, t: float, *, watts: float, reads: int, dt: float = 0.1
) -> tuple[float, float]:
    """``reads`` normal reads ``dt`` apart at ``watts``, from (raw, t); returns the last."""
    for _ in range(reads):
        raw += watts * dt
        t = round(t + dt, 9)  # 1.0 after ten 0.1 s steps, not 0.9999999999999999
        assert v.update(raw, t).kind == "increase"
    return raw, t


def gpu(raw: float = 1_000_000.0, t: float = 0.0, **options: object) -> CounterValidator:
    return CounterValidator("gpu:0", raw, t, max_power_w=700.0, **options)  # type: ignore[arg-type]


# -- normal increases --------------------------------------------------------------------------


def test_normal_increases_are_counted_from_open() -> None:
    v = gpu()
    assert v.energy_j == 0.0 and v.last.kind == "open"
    verdict = v.update(1_000_030.0, 0.1)
    assert (verdict.kind, verdict.added_j, verdict.energy_j) == ("increase", 30.0, 30.0)
    assert verdict.accepted and verdict.message == ""
    v.update(1_000_030.0, 0.2)  # no change: a counter between two publications
    assert v.energy_j == 30.0
    assert (v.rejected, v.resets, v.wraps, v.rebases) == (0, 0, 0, 0)


def test_a_whole_publication_step_right_after_a_read_is_not_rejected() -> None:
    # Counters publish every ~100 ms: a read a microsecond after the last can see a whole step.
    v = gpu()
    # 700 J: a whole second at the power limit, as a counter publishing once a second would
    # show it (NVML's publish every ~100 ms, a tenth of that).
    assert v.update(1_000_700.0, 1e-6).kind == "increase"
    # The bound itself: max power x MARGIN x (elapsed + SLACK_S).
    assert v.plausible_j(1.0) == pytest.approx(700.0 * MARGIN * (1.0 + SLACK_S))
    assert v.plausible_j(-5.0) == v.plausible_j(0.0)  # a clock that stepped back is clamped


def test_integer_units_are_added_exactly() -> None:
    v = CounterValidator("gpu:0", 5000, 0.0, max_power_w=700.0, units_per_j=1000)
    assert v.update(7000, 0.1).energy_j == 2.0
    assert v.update(7001, 0.2).energy_j == 2.001
    assert v.update(7301, 0.3).energy_j == 2.301


# -- bad reads -----------------------------------------------------------------------------------


def test_step_back_is_a_bad_read_and_the_next_read_goes_on_from_the_last_good_one() -> None:
    v = gpu()
    v.update(1_000_000.0, 0.1)
    verdict = v.update(999_999.0, 0.2)
    assert verdict.kind == "rejected" and not verdict.accepted
    assert (verdict.added_j, verdict.energy_j) == (0.0, 0.0)
    assert verdict.message == (
        "gpu:0 energy counter stepped back 1.0 J (1000000.0 -> 999999.0 J) without restarting "
        "near zero: read ignored"
    )
    assert v.rejected == 1
    # The next good read counts from the last accepted value, not from the bad one.
    assert v.update(1_000_030.0, 0.3).energy_j == 30.0
    assert v.rejected == 1 and v.resets == 0


def test_implausible_jump_is_rejected() -> None:
    v = gpu()
    verdict = v.update(2_000_000.0, 0.1)
    assert verdict.kind == "rejected" and verdict.energy_j == 0.0
    assert "jumped 1000000.0 J in 0.1 s (1000000.0 -> 2000000.0 J)" in verdict.message
    assert "700 W" in verdict.message and verdict.message.endswith("read ignored")
    assert v.update(1_000_060.0, 0.2).energy_j == 60.0  # measured from t=0, the last good read


def test_the_bound_grows_with_the_time_since_the_last_good_read() -> None:
    v = gpu()
    assert v.update(1_001_000.0, 0.1).kind == "rejected"  # 1000 J in 0.1 s: 10 kW
    assert v.update(1_001_000.0, 0.3).kind == "increase"  # 1000 J in 0.3 s is within 2 x 700 W


@pytest.mark.parametrize("raw", [math.nan, math.inf, -1.0])
def test_values_that_are_no_counter_are_rejected(raw: float) -> None:
    v = gpu()
    verdict = v.update(raw, 0.1)
    assert verdict.kind == "rejected" and "not a cumulative energy" in verdict.message
    assert v.update(1_000_030.0, 0.2).energy_j == 30.0


def test_check_raises_bad_reading_naming_the_device() -> None:
    v = gpu()
    assert v.check(1_000_030.0, 0.1) == 30.0
    with pytest.raises(BadReading, match="stepped back") as raised:
        v.check(999_000.0, 0.2)
    assert raised.value.device == "gpu:0"
    assert isinstance(raised.value, DeviceError)
    assert v.energy_j == 30.0


# -- restarts and wraps --------------------------------------------------------------------------


def test_restart_near_zero_counts_the_new_value_never_the_old() -> None:
    v = gpu()
    v.update(1_000_300.0, 1.0)
    verdict = v.update(12.0, 1.1)  # a driver reload: 12 J since the restart
    assert verdict.kind == "reset"
    assert (verdict.added_j, verdict.energy_j) == (12.0, 312.0)
    assert "restarted near zero (1000300.0 -> 12.0 J" in verdict.message
    assert v.resets == 1 and v.rejected == 0
    assert v.update(42.0, 1.2).energy_j == 342.0  # on from the new base


def test_a_fall_to_a_value_that_could_not_have_accrued_is_no_restart() -> None:
    v = gpu()
    verdict = v.update(5_000.0, 0.1)  # 5 kJ cannot accrue in 0.1 s at 700 W
    assert verdict.kind == "rejected" and "without restarting near zero" in verdict.message


def test_plausible_wrap_is_counted() -> None:
    v = CounterValidator("cpu:0", RAPL_RANGE_J - 1.0, 0.0, max_power_w=1000.0, wrap=RAPL_RANGE_J)
    verdict = v.update(1.5, 0.1)
    assert verdict.kind == "wrap" and verdict.energy_j == pytest.approx(2.5)
    assert v.wraps == 1 and v.resets == 0


def test_a_drop_without_wrapping_is_not_a_whole_range_of_energy() -> None:
    # 100 J -> 0: as a wrap it would be +262,043 J in 0.1 s.
    v = CounterValidator("cpu:0", 100.0, 0.0, max_power_w=1000.0, wrap=RAPL_RANGE_J)
    verdict = v.update(0.0, 0.1)
    assert verdict.kind == "reset" and verdict.energy_j == 0.0
    assert v.wraps == 0


def test_a_step_back_with_a_wrap_modulus_is_still_a_bad_read() -> None:
    v = CounterValidator("cpu:0", 200_000.0, 0.0, max_power_w=1000.0, wrap=RAPL_RANGE_J)
    verdict = v.update(199_000.0, 0.1)
    assert verdict.kind == "rejected"
    assert "without wrapping or restarting near zero" in verdict.message


def test_a_wrap_that_took_the_time_it_needs_is_counted() -> None:
    v = CounterValidator("dram:0", 9.0, 0.0, max_power_w=1000.0, wrap=65_532.0)
    assert v.update(1.0, 0.1).kind == "reset"  # 65 524 J in 0.1 s cannot be a wrap
    v = CounterValidator("dram:0", 9.0, 0.0, max_power_w=1000.0, wrap=65_532.0)
    verdict = v.update(1.0, 60.0)  # the same in a minute can
    assert verdict.kind == "wrap" and verdict.energy_j == pytest.approx(65_524.0)


# -- counters that moved for good ----------------------------------------------------------------


def test_a_consistent_jump_is_rebased_without_counting_the_jump() -> None:
    v = gpu()
    raw, t = steady(v, 1_000_000.0, 0.0, watts=300.0, reads=10)  # 300 J by t = 1 s
    assert v.rate_w == pytest.approx(300.0)
    raw += 1_000_000.0  # the counter jumps and counts on from there
    kinds = []
    for _ in range(REBASE_AFTER):
        raw += 30.0
        t += 0.1
        kinds.append(v.update(raw, t).kind)
    assert kinds == ["rejected"] * (REBASE_AFTER - 1) + ["rebase"]
    # 300 J + the 0.1 s before the first jumped read, estimated at 300 W, + the counter's own
    # 60 J among the jumped reads: the true 390 J, not a million.
    assert v.energy_j == pytest.approx(390.0)
    assert v.rebases == 1 and v.estimates == 1
    assert v.estimated_j == pytest.approx(30.0) and v.last.estimated_j == pytest.approx(30.0)
    assert "moved for good" in v.last.message and "not counted" in v.last.message
    assert v.rejected == REBASE_AFTER - 1
    assert v.update(raw + 30.0, t + 0.1).energy_j == pytest.approx(420.0)  # on from the new level


def test_a_step_back_that_stays_is_rebased() -> None:
    v = gpu()
    raw, t = steady(v, 1_000_000.0, 0.0, watts=300.0, reads=10)
    raw -= 100.0  # steps back 100 J for good, then counts on
    kinds = []
    for _ in range(REBASE_AFTER):
        raw += 30.0
        t += 0.1
        kinds.append(v.update(raw, t).kind)
    assert kinds == ["rejected"] * (REBASE_AFTER - 1) + ["rebase"]
    assert v.energy_j == pytest.approx(390.0)
    assert v.update(raw + 30.0, t + 0.1).energy_j == pytest.approx(420.0)


def test_a_glitch_shorter_than_the_rebase_count_is_only_ignored() -> None:
    v = gpu()
    raw, t = steady(v, 1_000_000.0, 0.0, watts=300.0, reads=10)
    for _ in range(REBASE_AFTER - 1):  # reads off by +1 MJ, then right again
        t += 0.1
        raw += 30.0
        assert v.update(raw + 1_000_000.0, t).kind == "rejected"
    t += 0.1
    raw += 30.0
    assert v.update(raw, t).kind == "increase"
    assert v.energy_j == pytest.approx(390.0) and v.rebases == 0 and v.estimated_j == 0.0


def test_inconsistent_bad_reads_never_rebase() -> None:
    v = gpu()
    for i in range(10):
        value = 5_000_000.0 if i % 2 else 3_000_000.0  # garbage that jumps about
        assert v.update(value, 0.1 * (i + 1)).kind == "rejected"
    assert v.rebases == 0 and v.rejected == 10 and v.energy_j == 0.0


def test_rebase_before_any_rate_is_known_estimates_zero() -> None:
    v = gpu(t=0.0)
    for i in range(REBASE_AFTER):
        v.update(5_000_000.0 + 30.0 * i, 0.1 * (i + 1))
    assert v.last.kind == "rebase"
    assert v.energy_j == pytest.approx(60.0)  # the counter's own steps after the move
    assert v.estimates == 1 and v.estimated_j == 0.0


# -- set-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"max_power_w": 0.0}, "max_power_w"),
        ({"max_power_w": math.nan}, "max_power_w"),
        ({"max_power_w": 700.0, "wrap": 0}, "wrap"),
        ({"max_power_w": 700.0, "units_per_j": 0}, "units_per_j"),
        ({"max_power_w": 700.0, "rebase_after": 1}, "rebase_after"),
        ({"max_power_w": 700.0, "margin": 0.5}, "margin"),
    ],
)
def test_bad_settings_say_what_is_wrong(options: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CounterValidator("gpu:0", 0.0, 0.0, **options)  # type: ignore[arg-type]

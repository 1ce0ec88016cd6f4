"""The counter phase lock (meter.stepclock) and what it buys windows, on a fake clock."""

from __future__ import annotations

import pytest

from meter.stepclock import StepModel
from meter.testing.clock import FakeClock
from meter.testing.replay import replay_windows
from meter.testing.simgpu import SimulatedGPU


def locked(period_s: float = 0.1, anchor_s: float = 0.0, watts: float = 100.0) -> StepModel:
    """A model locked on steps at anchor + k x period, with ``watts`` flowing."""
    model = StepModel()
    times = [anchor_s + k * period_s for k in range(3)]
    values = [watts * period_s * k for k in range(3)]
    model.calibrate(times, values, [period_s] * 5)
    assert model.locked
    return model


def test_a_value_seen_two_steps_late_near_a_step_is_left_for_a_later_read() -> None:
    """Steps at 0.1 s; the last value seen is step 2's. A read at 0.3995, within the tolerance
    before step 4, sees a new value: step 3's seen late, or step 4's published early. Taking it
    for step 4 broke the lock when step 4 came (replays); guessing by the energy added picked
    the wrong step when the power had changed by a third. The model keeps its last placed value
    and the energy at the read is at least the raw value; the next read, away from a step,
    places it and the lock holds."""
    model = locked()  # 100 W: step 2 holds 20 J
    model.observe(0.3995, 30.0)
    assert model.locked and model.k_last == 2
    assert model.energy_at(0.3995, 30.0) == pytest.approx(max(30.0, 20.0 + 100.0 * 0.15))
    model.observe(0.4105, 40.0)  # step 4
    assert model.locked and model.k_last == 4
    model = locked(watts=300.0)  # the same just after a step: 1 ms after step 5
    model.observe(0.501, 138.0)
    assert model.locked and model.k_last == 2
    assert model.energy_at(0.501, 138.0) == pytest.approx(138.0)  # not a period more


def test_a_value_published_a_little_early_is_still_recognised() -> None:
    model = locked()
    model.observe(0.2999, 30.0)  # step 3 published 0.1 ms before its predicted time
    assert model.locked and model.k_last == 3


def test_interpolation_between_published_values() -> None:
    model = locked(watts=100.0)
    model.observe(0.305, 30.0)
    model.observe(0.405, 60.0)  # 300 W in the period after step 3
    # Between steps 3 and 4 the energy is interpolated from both values, not extrapolated
    # from the 100 W before.
    assert model.interpolate(0.35) == pytest.approx(45.0)
    assert model.interpolate(0.45) is None  # step 5 not seen yet
    model.unlock()
    assert model.interpolate(0.35) is None


def test_windows_that_start_just_after_a_power_drop_are_interpolated() -> None:
    """700 W then 80 W at t = 2.0 on a 100 ms counter (an H100 going idle). A window's start
    used to be extrapolated from the last period's power: opened at 2.06, after the update of
    2.05, it started 390 W x 10 ms early (-4 % on a 1 s window). At its exit the counter values
    around its start are known, and it is interpolated between them: exact when the start's
    period is all at one power, and within a quarter of the drop x the period otherwise."""
    clock = FakeClock()
    gpu = SimulatedGPU(
        lambda t: 700.0 if t < 2.0 else 80.0, clock=clock, sensor="ideal", counter_phase_s=0.05
    )
    windows = [(2.06, 3.06), (2.09, 3.09), (2.12, 3.12), (2.03, 3.03)]
    results = replay_windows(gpu, clock, windows, meter_start_s=0.0)
    for w in results:
        truth = gpu.energy_between_j(gpu.created_s + w.start_s, gpu.created_s + w.end_s)
        if w.start_s > 2.05:  # the start's counter period is all at 80 W
            assert w.metered_j == pytest.approx(truth, rel=0.002), w
        else:  # the drop is inside the start's period: linear between its two values
            assert abs(w.metered_j - truth) < 620.0 * 0.1 / 4, w

"""The ledger (meter.ledger) on a fake clock: tracks, snapshots, the sample history."""

from __future__ import annotations

import pytest

from meter.devices.nvml import open_gpus
from meter.ledger import MAX_EXTRAPOLATION_S, Ledger, Snapshot, Track
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML
from meter.testing.simgpu import SimulatedGPU


def track_of(gpu: SimulatedGPU, clock: FakeClock) -> Track:
    (device,), _, _ = open_gpus(nvml=FakeNVML([gpu]), visible=None)
    return Track(device, clock)


def test_a_counter_track_publishes_what_it_read() -> None:
    clock = FakeClock()
    gpu = SimulatedGPU(300.0, clock=clock, counter_update_s=0, sensor="ideal")
    track = track_of(gpu, clock)
    assert track.snapshot().t is None and track.snapshot().energy_j == 0.0
    clock.advance(0.5)
    track.observe()
    snap = track.snapshot()
    assert snap.t == pytest.approx(clock())
    assert snap.energy_j == pytest.approx(150.0)  # joules since the device was opened
    assert snap.steps is None  # no phase lock: the sampler never calibrated it
    clock.advance(0.5)
    track.observe()
    assert track.snapshot().energy_j == pytest.approx(300.0)
    assert track.snapshot() is not snap  # replaced whole, never changed in place


def test_a_power_track_integrates_with_the_trapezoid_rule() -> None:
    clock = FakeClock()
    gpu = SimulatedGPU(
        lambda t: 100.0 + 100.0 * t, clock=clock, energy_counter=False, sensor="ideal"
    )
    track = track_of(gpu, clock)
    for _ in range(11):
        track.observe()
        clock.advance(0.1)
    # A linear ramp from 100 to 200 W over the 1 s between the first and last reads: 150 J.
    assert track.snapshot().energy_j == pytest.approx(150.0, rel=1e-6)
    assert track.snapshot().power_w == pytest.approx(200.0, rel=1e-6)


def test_a_failing_device_keeps_its_energy_and_says_why() -> None:
    clock = FakeClock()
    gpu = SimulatedGPU(300.0, clock=clock, counter_update_s=0, sensor="ideal")
    track = track_of(gpu, clock)
    clock.advance(1.0)
    track.observe()
    gpu.inject_error("gpu_lost")
    clock.advance(1.0)
    track.observe()
    snap = track.snapshot()
    # One failure is retried (tests/meter/test_faults.py); meanwhile the snapshot says why.
    assert snap.error is None and "GPU is lost" in (snap.last_error or "")
    assert snap.read_errors == 1 and snap.unreadable_since is not None
    assert snap.energy_j == pytest.approx(300.0)


def test_the_one_extrapolation_is_clamped() -> None:
    snap = Snapshot(10.0, 100.0, 50.0, 0.0, 0.0, None, 0, False, None)
    assert snap.energy_at(10.5) == pytest.approx(125.0)
    assert snap.energy_at(9.5) == pytest.approx(75.0)
    assert snap.energy_at(5.0) == pytest.approx(50.0)  # back by at most 1 s
    assert snap.energy_at(100.0) == pytest.approx(100.0 + 50.0 * MAX_EXTRAPOLATION_S)


def ledger_with(power: list[tuple[float, float]], clock: FakeClock, **options: object) -> Ledger:
    """A ledger over one sampled GPU whose power steps through ``power`` ((t, watts), relative
    to its creation), with a sample recorded every 10 ms."""

    def watts(t: float) -> float:
        value = power[0][1]
        for start, w in power:
            if t >= start:
                value = w
        return value

    gpu = SimulatedGPU(watts, clock=clock, energy_counter=False, sensor="ideal")
    (device,), _, _ = open_gpus(nvml=FakeNVML([gpu]), visible=None)
    return Ledger([device], clock, **options)  # type: ignore[arg-type]


def run(ledger: Ledger, clock: FakeClock, seconds: float, step: float = 0.01) -> None:
    end = clock() + seconds
    while clock() < end - 1e-9:
        for track in ledger.tracks:
            track.observe()
        ledger.record(clock(), 0.0)
        clock.advance(step)


def test_peak_power_over_a_span_and_from_the_coarse_history() -> None:
    clock = FakeClock(0.0)
    ledger = ledger_with([(0.0, 100.0), (1.0, 500.0), (1.2, 100.0)], clock, history=50)
    ledger.coarse_every = 10
    run(ledger, clock, 3.0)
    # The fine history holds only the last 0.5 s (50 samples at 10 ms): the burst at 1.0-1.2 s
    # is found in the coarse blocks.
    assert ledger.samples[0].t > 2.4
    assert ledger.peak_power(0.5, 2.0) == (pytest.approx(500.0),)
    assert ledger.peak_power(2.6, 2.9) == (pytest.approx(100.0),)
    assert ledger.peak_power(10.0, 11.0) == (0.0,)  # nothing sampled then


def test_energy_at_a_past_time_is_interpolated_between_samples() -> None:
    clock = FakeClock(0.0)
    ledger = ledger_with([(0.0, 200.0)], clock)
    run(ledger, clock, 1.0, step=0.1)
    a, b = ledger.samples[2], ledger.samples[3]
    middle = (a.t + b.t) / 2
    (energy,) = ledger.energy_at_past(middle)  # type: ignore[misc]
    assert energy == pytest.approx((a.energy_j[0] + b.energy_j[0]) / 2)
    assert ledger.energy_at_past(ledger.samples[0].t - 1.0) is None
    assert ledger.energy_at_past(clock() + 1.0) is None

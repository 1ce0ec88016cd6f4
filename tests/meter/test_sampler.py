"""The sampler (meter.sampler) on a fake clock: no thread, no sleeping."""

from __future__ import annotations

import itertools

import pytest

from meter.devices.nvml import open_gpus
from meter.ledger import Ledger
from meter.sampler import TICK_SPREAD, Sampler, tick_offset
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML
from meter.testing.simgpu import SimulatedGPU


def test_the_sampler_runs_on_a_fake_clock_with_spread_ticks() -> None:
    """No thread and no real wait: `run_once` ticks on the injected clock. The ticks keep the
    mean interval, each within +-12.5 % of its slot (the golden-ratio spread), so successive
    ticks are 75-125 % of the interval apart. 20 simulated seconds take milliseconds."""
    from meter.devices.nvml import open_gpus
    from meter.ledger import Ledger
    from meter.sampler import TICK_SPREAD, Sampler
    from meter.testing.nvml import FakeNVML

    clock = FakeClock()
    gpus, _, _ = open_gpus(nvml=FakeNVML([SimulatedGPU(300.0, clock=clock)]), visible=None)
    ledger = Ledger(gpus, clock)
    sampler = Sampler(ledger, 0.1, sleep=clock.sleep)
    start = clock()
    ticks = []  # when each tick was due (a capture burst can run a tick a few ms late)
    for _ in range(200):
        ticks.append(sampler.next_tick_s or clock())
        clock.set(max(ticks[-1], clock()))
        sampler.run_once()
    gaps = [b - a for a, b in itertools.pairwise(ticks[1:])]
    assert (ticks[-1] - ticks[1]) / (len(ticks) - 2) == pytest.approx(0.1, rel=0.01)
    inside = [0.1 * (1 - TICK_SPREAD) - 1e-9 <= g <= 0.1 * (1 + TICK_SPREAD) + 1e-9 for g in gaps]
    # (A precise capture of a counter step may move one tick: a handful in 20 s.)
    assert sum(inside) >= 0.95 * len(gaps), [
        round(g, 4) for g, ok in zip(gaps, inside, strict=True) if not ok
    ]
    assert len(ledger.samples) == 200 and ledger.tracks[0].lock_state().locked
    assert clock() - start < 21.0


def test_tick_offsets_cover_their_range_evenly() -> None:
    offsets = [tick_offset(k) for k in range(1, 1001)]
    assert all(-TICK_SPREAD / 2 <= o <= TICK_SPREAD / 2 for o in offsets)
    bins = [0] * 10
    for o in offsets:
        bins[min(int((o / TICK_SPREAD + 0.5) * 10), 9)] += 1
    assert all(95 <= b <= 105 for b in bins), bins  # low discrepancy: near-exact 100 each


def sampler_on(clock: FakeClock, *gpus: SimulatedGPU, interval_s: float = 0.1) -> Sampler:
    devices, _, _ = open_gpus(nvml=FakeNVML(list(gpus)), visible=None)
    return Sampler(Ledger(devices, clock), interval_s, sleep=clock.sleep)


def test_the_first_pass_locks_the_counters_within_half_a_second() -> None:
    clock = FakeClock()
    sampler = sampler_on(clock, SimulatedGPU(300.0, clock=clock), SimulatedGPU(0.5, clock=clock))
    start = clock()
    sampler.run_once()
    states = [t.lock_state() for t in sampler.ledger.tracks]
    assert all(s.locked and s.period_s == pytest.approx(0.1, rel=0.01) for s in states)
    assert clock() - start < 0.5
    assert sampler.ticks == 1 and len(sampler.ledger.samples) == 1


def test_a_sampler_that_fell_behind_skips_instead_of_bursting() -> None:
    clock = FakeClock()
    sampler = sampler_on(clock, SimulatedGPU(300.0, clock=clock), interval_s=0.1)
    sampler.run_once()
    clock.advance(5.0)  # the process was suspended
    next_tick = sampler.run_once()
    assert next_tick == pytest.approx(clock() + 0.1)
    assert sampler.ticks == 2


def test_an_unlocked_counter_is_calibrated_again() -> None:
    clock = FakeClock()
    gpu = SimulatedGPU(300.0, clock=clock)
    sampler = sampler_on(clock, gpu)
    sampler.run_once()
    track = sampler.ledger.tracks[0]
    assert track.lock_state().locked
    gpu.counter_phase_s = (gpu.counter_phase_s + 0.05) % 0.1  # the board's phase jumps
    for _ in range(120):  # 12 s: a lost lock is noticed, then recalibrated within 5 s
        clock.set(max(sampler.next_tick_s or clock(), clock()))
        sampler.run_once()
    state = track.lock_state()
    assert state.locked and state.failures >= 1

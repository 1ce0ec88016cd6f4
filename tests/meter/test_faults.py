"""Device faults on the fake clock: transient errors retried, persistent ones marked and probed,
gaps recorded as gaps, hung calls that stall neither the user nor the other devices."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from meter import Measurement, Meter
from meter.devices.nvml import open_gpus
from meter.ledger import (
    FAIL_AFTER_READS,
    FAIL_AFTER_S,
    PROBE_EVERY_S,
    RETRY_FIRST_S,
    STALL_S,
    Track,
)
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML
from meter.testing.replay import advance
from meter.testing.simgpu import SimulatedGPU

MakeMeter = Callable[..., tuple[Meter, FakeClock]]
COUNTER = "nvmlDeviceGetTotalEnergyConsumption"


def track_of(gpu: SimulatedGPU, clock: FakeClock) -> Track:
    (device,), _, _ = open_gpus(nvml=FakeNVML([gpu]), visible=None)
    return Track(device, clock)


def ideal(watts: float, clock: FakeClock, **options: object) -> SimulatedGPU:
    options.setdefault("counter_update_s", 0)
    return SimulatedGPU(watts, clock=clock, sensor="ideal", **options)  # type: ignore[arg-type]


def fault_in_a_window(
    clocked_meter: MakeMeter,
    fault: Callable[[SimulatedGPU], object],
    *,
    before_s: float,
    after_s: float,
    watts: float = 300.0,
    **gpu_options: object,
) -> tuple[Meter, FakeClock, Measurement]:
    """A window on one ideal simulated GPU (sampled at 10 Hz on a fake clock) with ``fault``
    applied ``before_s`` into it, closed ``after_s`` later; the meter, its clock, the result."""
    clock = FakeClock()
    gpu = ideal(watts, clock, **gpu_options)
    m, clock = clocked_meter(gpu, clock=clock, interval_s=0.1)
    advance(m, clock, 1.0)
    with m.measure("w") as w:
        advance(m, clock, before_s)
        fault(gpu)
        advance(m, clock, after_s)
    assert w.result is not None
    return m, clock, w.result


# -- transient and persistent errors on one track ---------------------------------------------


def test_one_transient_timeout_is_retried_and_the_counter_covers_the_gap() -> None:
    clock = FakeClock()
    gpu = ideal(300.0, clock)
    track = track_of(gpu, clock)
    clock.advance(1.0)
    track.observe()
    gpu.inject_error("timeout")
    clock.advance(0.05)
    track.observe()  # fails: NVML_ERROR_TIMEOUT
    snap = track.snapshot()
    assert snap.error is None  # not marked failed for one error
    # Unreadable from the last good read (it may have stopped answering anywhere since).
    assert snap.read_errors == 1 and snap.unreadable_since == pytest.approx(101.0)
    assert "Timeout" in (snap.last_error or "")
    gpu.clear_errors()
    clock.advance(RETRY_FIRST_S / 2)
    track.observe()  # the retry is not due yet: no read
    assert track.snapshot().unreadable_since is not None
    clock.advance(RETRY_FIRST_S)
    track.observe()
    snap = track.snapshot()
    assert snap.error is None and snap.unreadable_since is None
    assert snap.unreadable_s == pytest.approx(0.05 + 1.5 * RETRY_FIRST_S, rel=1e-6)
    # 1.05 s + 0.15 s at 300 W: the counter counted through the gap, nothing lost
    assert snap.energy_j == pytest.approx(300.0 * (1.05 + 1.5 * RETRY_FIRST_S), rel=1e-6)


def test_a_persistent_failure_is_marked_after_the_documented_count_and_time_then_probed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    gpu = ideal(300.0, clock)
    track = track_of(gpu, clock)
    clock.advance(1.0)
    track.observe()
    gpu.inject_error("gpu_lost")
    failed_at = None
    with caplog.at_level(logging.WARNING, logger="meter"):
        for _ in range(400):  # a sampler at 10 Hz for 40 s
            clock.advance(0.1)
            track.observe()
            if failed_at is None and track.snapshot().error is not None:
                failed_at = clock()
    snap = track.snapshot()
    assert failed_at is not None and "GPU is lost" in (snap.error or "")
    assert failed_at - 101.1 >= FAIL_AFTER_S - 1e-9  # not before 10 s of failures...
    assert snap.read_errors >= FAIL_AFTER_READS  # ... nor before 5 failed reads
    # Backoff then probes: far fewer reads than ticks.
    assert snap.read_errors < 20
    assert snap.energy_at(clock() + 10.0) == snap.energy_j  # a failed device is not carried on
    assert any("marked failed" in r.message for r in caplog.records)
    assert sum("read failed" in r.message for r in caplog.records) == 1  # one warning, not 400
    # It comes back: the next probe (within PROBE_EVERY_S) resumes it, and its counter has
    # counted the whole outage.
    gpu.clear_errors()
    for _ in range(int(PROBE_EVERY_S / 0.1) + 1):
        clock.advance(0.1)
        track.observe()
    snap = track.snapshot()
    assert snap.error is None and snap.unreadable_since is None
    assert snap.energy_j == pytest.approx(300.0 * (clock() - 100.0), rel=1e-3)


def test_a_power_device_gap_is_interpolated_across_not_zeroed(clocked_meter: MakeMeter) -> None:
    clock = FakeClock()
    gpu = ideal(200.0, clock, energy_counter=False)
    m, clock = clocked_meter(gpu, clock=clock, interval_s=0.1)
    advance(m, clock, 1.0)
    with m.measure("w") as w:
        advance(m, clock, 1.0)
        gpu.inject_error("timeout")
        advance(m, clock, 1.0)
        gpu.clear_errors()
        advance(m, clock, 1.0)
    assert w.result is not None
    dev = w.result.devices["gpu:0"]
    assert dev.energy_j == pytest.approx(600.0, rel=0.02)  # 3 s at 200 W, not 400 J
    assert dev.approximate
    assert any("interpolated" in f for f in dev.faults)


def test_a_window_that_ends_in_an_outage_says_its_energy_is_missing(
    clocked_meter: MakeMeter,
) -> None:
    _, _, result = fault_in_a_window(
        clocked_meter, lambda gpu: gpu.inject_error("gpu_lost"), before_s=1.0, after_s=5.0
    )
    dev = result.devices["gpu:0"]
    assert dev.approximate
    assert any("missing" in f and "GPU is lost" in f for f in dev.faults)
    assert "faults" in dev.to_dict()
    # What was seen before the loss, not carried on into the outage, and not 0.
    assert 300.0 * 0.85 <= dev.energy_j <= 300.0 * 1.0 + 1e-6


def test_a_clean_window_has_no_faults(clocked_meter: MakeMeter) -> None:
    m, clock = clocked_meter(300.0, interval_s=0.1)
    with m.measure("w") as w:
        advance(m, clock, 1.0)
    assert w.result is not None
    assert w.result.devices["gpu:0"].faults == ()
    assert "faults" not in w.result.devices["gpu:0"].to_dict()


# -- a hung device call --------------------------------------------------------------------------


def two_gpu_meter(hung: SimulatedGPU, fine: SimulatedGPU, clock: FakeClock) -> Meter:
    """A started meter on the fake clock, without a sampler thread (the tests drive it)."""
    m = Meter(
        nvml=FakeNVML([hung, fine]),
        clock=clock,
        sleep=clock.sleep,
        background=False,
        cpu=False,
        carbon=False,
        idle_file="/nonexistent/meter-idle.json",
    )
    m.start()
    return m


def test_a_boundary_does_not_wait_for_a_hung_call_and_is_flagged() -> None:
    clock = FakeClock()
    hung, fine = ideal(300.0, clock), ideal(150.0, clock)
    m = two_gpu_meter(hung, fine, clock)
    try:
        advance(m, clock, 1.0)
        w = m.measure("w")
        w.start()
        advance(m, clock, 1.0)
        release = hung.inject_hang(calls=[COUNTER], timeout_s=30.0)
        track = m.ledger.tracks[0]
        reader = threading.Thread(target=track.observe)  # the sampler's read, stuck
        reader.start()
        while track.busy_since is None:
            reader.join(0.001)
        w.stop()  # must not wait for the stuck call (it would wait until release)
        assert track.busy_since is not None and not release.is_set()
        assert w.result is not None
        assert any("did not wait" in f for f in w.result.devices["gpu:0"].faults)
        assert w.result.devices["gpu:1"].faults == ()
        assert w.result.devices["gpu:0"].energy_j == pytest.approx(300.0, rel=0.01)
        release.set()
        reader.join(5.0)
    finally:
        m.close()


def test_a_late_read_is_timed_at_its_end_so_it_never_lands_before_a_boundary() -> None:
    clock = FakeClock()
    gpu = ideal(300.0, clock)
    track = track_of(gpu, clock)
    clock.advance(1.0)
    track.observe()
    # A read that takes 2 s: the driver answers at its end with the counter of then.
    original = track.device.read

    def slow_read():  # type: ignore[no-untyped-def]
        clock.advance(2.0)
        return original()

    track.device.read = slow_read  # type: ignore[method-assign]
    track.observe()
    snap = track.snapshot()
    # Placed at the end of the call, not its midpoint 1 s earlier: the 900 J it reports are
    # never credited to a time before the call ended.
    assert snap.t == pytest.approx(clock()) and snap.energy_j == pytest.approx(900.0)


def test_the_watchdog_marks_a_hung_device_and_a_new_sampler_thread_reads_the_others() -> None:
    clock = FakeClock()
    hung, fine = ideal(300.0, clock), ideal(150.0, clock)
    m = two_gpu_meter(hung, fine, clock)
    sampler = m.sampler
    try:
        advance(m, clock, 0.5)
        release = hung.inject_hang(calls=[COUNTER], timeout_s=30.0)
        stuck = threading.Thread(target=sampler.tick)  # the sampler's thread, stuck in gpu:0
        sampler._thread = stuck  # (as if it were the sampler's own thread)
        stuck.start()
        hung_track, fine_track = m.ledger.tracks
        while hung_track.busy_since is None:
            stuck.join(0.001)
        assert sampler.check_stalls() == []  # not yet: a call may take a while
        clock.advance(STALL_S)
        assert sampler.check_stalls() == ["gpu:0"]
        assert hung_track.snapshot().unreadable_since is not None
        assert sampler.replaced_threads == 1 and sampler._thread is not stuck
        # The other GPU goes on being read meanwhile (the hung one is skipped, not waited on).
        before = fine_track.snapshot().t
        clock.advance(0.1)
        sampler.tick()
        assert fine_track.snapshot().t is not None and fine_track.snapshot().t > (before or 0)
        release.set()
        stuck.join(5.0)
        assert not stuck.is_alive()
        clock.advance(0.1)
        sampler.tick()  # the hung GPU answers again: readable, the gap closed
        snap = hung_track.snapshot()
        assert snap.unreadable_since is None and snap.unreadable_s > 0
    finally:
        m.close()


# -- counters that lie, and a counter that goes away (through whole windows) --------------------


def test_a_counter_that_steps_back_once_adds_no_phantom_joules(clocked_meter: MakeMeter) -> None:
    # One read 100 J low: below the read before it.
    m, _, result = fault_in_a_window(
        clocked_meter,
        lambda gpu: gpu.inject_counter_glitch(-100_000),
        before_s=0.5,
        after_s=1.0,
    )
    dev = result.devices["gpu:0"]
    assert dev.energy_j == pytest.approx(450.0, rel=0.01)  # was about 1,000,000 J
    assert any("ignored" in f for f in dev.faults)
    assert m.ledger.tracks[0].snapshot().rejected_reads == 1


def test_a_counter_jump_past_the_power_limit_is_ignored(clocked_meter: MakeMeter) -> None:
    # +1,000,000 J on one read.
    _, _, result = fault_in_a_window(
        clocked_meter,
        lambda gpu: gpu.inject_counter_glitch(1_000_000_000),
        before_s=0.5,
        after_s=1.0,
    )
    assert result.devices["gpu:0"].energy_j == pytest.approx(450.0, rel=0.01)


def test_a_driver_reload_restarts_the_counter_without_losing_the_window(
    clocked_meter: MakeMeter,
) -> None:
    _, _, result = fault_in_a_window(
        clocked_meter, lambda gpu: gpu.reset_counter(), before_s=0.5, after_s=1.0
    )
    # At most the energy between the last read before the reset and the reset is lost (one
    # sampling interval at most): never the raw counter added, never 0.
    assert 300.0 * 1.4 <= result.devices["gpu:0"].energy_j <= 300.0 * 1.5 + 1.0


def test_a_counter_lost_mid_run_falls_back_to_power_readings(clocked_meter: MakeMeter) -> None:
    m, clock, result = fault_in_a_window(
        clocked_meter,
        lambda gpu: gpu.inject_error("not_supported", calls=[COUNTER]),
        before_s=1.0,
        after_s=2.0,
    )
    with m.measure("after") as after:
        advance(m, clock, 1.0)
    assert after.result is not None
    dev = result.devices["gpu:0"]
    assert dev.energy_j == pytest.approx(900.0, rel=0.03)  # not 300 J frozen, not 0
    assert any("stopped answering" in f for f in dev.faults) and dev.approximate
    track = m.ledger.tracks[0]
    assert not track.info.counter and track.snapshot().error is None
    assert after.result.devices["gpu:0"].energy_j == pytest.approx(300.0, rel=0.03)
    assert after.result.devices["gpu:0"].faults == ()


def test_the_readme_fault_table_names_tests_that_exist() -> None:
    """Every test the README's Reliability table names exists (a bare ``test_x.py::name``
    is in the folder of the last full path before it in the table)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Reliability") : text.index("## Accuracy")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 15
    folder = None
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        for ref in re.findall(r"`([\w/]+\.py)::(\w+)`", cell):
            path, name = ref
            if "/" in path:
                folder = str(Path(path).parent)
            else:
                assert folder is not None, f"{path} needs a full path first in: {cell}"
                path = f"{folder}/{path}"
            source = (root / path).read_text(encoding="utf-8")
            assert re.search(rf"def {name}\b", source), f"{path}::{name} (README) does not exist"


def test_end_to_end_a_hung_gpu_stalls_neither_the_user_nor_the_other_gpu() -> None:
    """Real time, real sampler thread and watchdog: one GPU's driver hangs for good."""
    import time

    hung, fine = SimulatedGPU(300.0), SimulatedGPU(150.0)
    m = Meter(
        nvml=FakeNVML([hung, fine]),
        interval_s=0.05,
        cpu=False,
        carbon=False,
        idle_file="/nonexistent/meter-idle.json",
    )
    m.start()
    release = threading.Event()
    try:
        m.sampler.wait_ready()
        hung_track, fine_track = m.ledger.tracks
        hung.inject_hang(release, calls=[COUNTER], timeout_s=60.0)
        deadline = time.monotonic() + 10.0
        while hung_track.snapshot().unreadable_since is None:  # the watchdog's verdict
            assert time.monotonic() < deadline, "the watchdog never marked the hung GPU"
            time.sleep(0.05)
        assert m.sampler.replaced_threads >= 1
        with m.measure("during") as w:  # boundary reads: the hung GPU is not waited on
            seen = fine_track.snapshot().t
            while fine_track.snapshot().t == seen:  # the other GPU is still being read
                assert time.monotonic() < deadline, "gpu:1 stopped being read"
                time.sleep(0.01)
        assert not release.is_set() and hung_track.busy_since is not None  # still hung
        assert w.result is not None
        faults = w.result.devices["gpu:0"].faults
        assert any("missing" in f and "hung" in f for f in faults), faults
        assert w.result.devices["gpu:1"].faults == ()
    finally:
        release.set()
        hung.clear_errors()
    try:
        deadline = time.monotonic() + 10.0
        while hung_track.snapshot().unreadable_since is not None:  # it answers again
            assert time.monotonic() < deadline, "the GPU did not resume after the hang"
            time.sleep(0.05)
        time.sleep(0.5)  # a few counter periods for the phase lock to settle again
        with m.measure("after") as after:
            time.sleep(1.0)
        assert after.result is not None and after.result.devices["gpu:0"].faults == ()
        # Within a counter step or so of the truth (1 s: a 100 ms step is 10 %).
        assert after.result.devices["gpu:0"].avg_power_w == pytest.approx(300.0, rel=0.25)
    finally:
        m.close()


def test_clear_errors_releases_a_hang_that_holds_the_board() -> None:
    gpu = SimulatedGPU(300.0)
    (device,), _, _ = open_gpus(nvml=FakeNVML([gpu]), visible=None)
    gpu.inject_hang(calls=[COUNTER], timeout_s=30.0)
    reader = threading.Thread(target=device.read)
    reader.start()
    while gpu.calls[COUNTER] < 2:  # (1 at open) the read has entered the hung call
        reader.join(0.001)
    clearer = threading.Thread(target=gpu.clear_errors)  # it used to wait for the board
    clearer.start()
    clearer.join(5.0)
    reader.join(5.0)
    assert not clearer.is_alive() and not reader.is_alive()

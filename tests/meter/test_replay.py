"""Replaying recordings through the real device code (SimulatedGPU.replay, METER_SIMULATE_GPUS
trace:), and what meter adds to what the driver published (meter.testing.replay)."""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from meter.errors import ConfigError
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML, parse_simulate_env
from meter.testing.replay import replay_windows
from meter.testing.sensor import SENSORS
from meter.testing.simgpu import SimulatedGPU
from meter.testing.traces import Recording, load_recording

from .traces_helpers import RECORDINGS, needs_traces, recording, write_recording


def started(gpu: SimulatedGPU) -> tuple[FakeNVML, object]:
    nvml = FakeNVML([gpu])
    nvml.nvmlInit()
    return nvml, nvml.nvmlDeviceGetHandleByIndex(0)


@pytest.fixture
def synthetic(tmp_path: Path) -> Recording:
    """2 s of idle then 2 s of load on the external meter; the driver reads 10 % low, in rows
    every 10 ms, with an instantaneous field that lags by one row."""
    folder = write_recording(
        tmp_path / "A100",
        pairs=lambda t: [(1000, 100 if t < 2.0 else 300), (0, 0), (0, 0), (0, 0)],
        seconds=4.0,
        readings=lambda t: {
            "power.draw": 66.0 if t < 2.2 else 198.0,
            "power.draw.instant": 66.0 if t < 2.21 else 198.0,
        },
        switches=[2.0],
    )
    return load_recording(folder)


# -- replay modes --------------------------------------------------------------------------------


def test_recorded_mode_serves_exactly_the_recorded_readings(synthetic: Recording) -> None:
    clock = FakeClock()
    gpu = SimulatedGPU.replay(synthetic, clock=clock)
    nvml, handle = started(gpu)
    for t in (0.5, 2.205, 2.215, 3.0):
        clock.set(gpu.created_s + t)
        assert nvml.nvmlDeviceGetPowerUsage(handle) == round(
            1000 * synthetic.driver_power_w("power.draw", t)
        )
        (field,) = nvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])
        assert field.value.uiVal == round(1000 * synthetic.driver_power_w("power.draw.instant", t))
    with pytest.raises(pynvml.NVMLError_NotSupported):  # no energy counter was recorded
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    # The board's truth is the external meter's trace.
    assert gpu.power_at(gpu.created_s + 3.0) == pytest.approx(synthetic.reference_power_w(3.0))
    assert "replays the driver readings recorded in" in nvml.simulation_note(handle)


def test_a_file_without_the_instant_field_has_none(tmp_path: Path) -> None:
    folder = write_recording(
        tmp_path / "4090",
        pairs=lambda t: [(1000, 100), (0, 0), (0, 0), (0, 0)],
        readings=lambda t: {"power.draw": 70.0},
    )
    gpu = SimulatedGPU.replay(str(folder), clock=FakeClock())
    nvml, handle = started(gpu)
    (field,) = nvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])
    assert field.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 70_000


def test_reference_mode_puts_the_sensor_model_on_the_trace(synthetic: Recording) -> None:
    clock = FakeClock()
    gpu = SimulatedGPU.replay(synthetic, mode="reference", clock=clock)
    assert gpu.sensor is SENSORS["a100"]  # from the folder name
    nvml, handle = started(gpu)
    clock.set(gpu.created_s + 1.0)
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    clock.set(gpu.created_s + 3.9)
    e1 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    a100 = SENSORS["a100"]
    truth = synthetic.reference_energy_j(1.0, 3.9)
    expected = a100.gain * truth + a100.offset_w * 2.9
    assert (e1 - e0) / 1000 == pytest.approx(expected, abs=a100.gain * 185.0 * a100.update_s + 1)
    with pytest.raises(ValueError, match="'recorded' or 'reference'"):
        SimulatedGPU.replay(synthetic, mode="live")  # type: ignore[arg-type]


def test_a_replay_loops_and_says_so_once(synthetic: Recording, caplog) -> None:
    clock = FakeClock()
    gpu = SimulatedGPU.replay(synthetic, clock=clock)
    nvml, handle = started(gpu)
    loop = synthetic.end_s
    with caplog.at_level(logging.WARNING, logger="meter"):
        for t in (0.5, loop + 0.5, 2 * loop + 0.5):
            clock.set(gpu.created_s + t)
            assert nvml.nvmlDeviceGetPowerUsage(handle) == 66_000
    looped = [r for r in caplog.records if "replays it again from the start" in r.message]
    assert len(looped) == 1
    one = gpu.published_energy_between_j(gpu.created_s, gpu.created_s + loop, "average")
    two = gpu.published_energy_between_j(gpu.created_s, gpu.created_s + 2 * loop, "average")
    assert two == pytest.approx(2 * one, rel=1e-9)


def test_simulate_env_mixes_traces_and_watts(synthetic: Recording) -> None:
    gpus = parse_simulate_env(f"trace:{synthetic.path}, 300, reference:{synthetic.path}")
    assert [g.energy_counter for g in gpus] == [False, True, True]
    assert gpus[0].uuid.endswith("000000000000") and gpus[2].uuid.endswith("000000000002")
    assert gpus[2].sensor is SENSORS["a100"]
    with pytest.raises(ConfigError, match=r"entry 1 \('trace:'\): 'trace:' needs a recording"):
        parse_simulate_env("300,trace:")
    with pytest.raises(ConfigError, match="is not a folder") as raised:
        parse_simulate_env("trace:/no/such/recording")
    assert raised.value.setting == "METER_SIMULATE_GPUS"
    with pytest.raises(ConfigError, match=r"\.\.\. \(2012 characters\)") as raised:
        parse_simulate_env("x" * 2000 + ",trace:/nope")
    assert len(str(raised.value)) < 700  # a long value is not echoed whole


# -- what meter adds to what the driver published -------------------------------------------------


def tiled(rec: Recording, length_s: float, phases: int = 8) -> list[list[tuple[float, float]]]:
    """Back-to-back windows of ``length_s`` from 1 s in, at ``phases`` offsets."""
    runs = []
    for p in range(phases):
        a = 1.0 + length_s * p / phases
        run = []
        while a + length_s <= rec.end_s - 0.02:
            run.append((a, a + length_s))
            a += length_s
        runs.append(run)
    return runs


def errors_added(
    rec: Recording, mode: str, length_s: float, interval_s: float = 0.1
) -> list[float]:
    """|error| % of meter's windows against what the replayed board published (the field meter
    reads in recorded mode, the modelled counter in reference mode)."""
    source = (
        "counter"
        if mode == "reference"
        else ("instant" if "power.draw.instant" in rec.fields else "average")
    )
    out = []
    for windows in tiled(rec, length_s):
        clock = FakeClock()
        gpu = SimulatedGPU.replay(rec, mode=mode, clock=clock)  # type: ignore[arg-type]
        for w in replay_windows(gpu, clock, windows, interval_s=interval_s, meter_start_s=0.0):
            published = gpu.published_energy_between_j(
                gpu.created_s + w.start_s,
                gpu.created_s + w.end_s,
                source,  # type: ignore[arg-type]
            )
            out.append(abs(w.metered_j / published - 1) * 100)
    return out


@needs_traces
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: "/".join(p.parts[-2:]))
@pytest.mark.parametrize("mode", ["recorded", "reference"])
def test_meter_adds_at_most_one_percent_of_its_own(path: Path, mode: str) -> None:
    """Sampled at 10 Hz on the recorded readings, windows of 1 s and longer, back to back at 8
    phases (some straddle the load steps): the median error meter adds to what the driver
    published is at most 1 % for 1, 2 and 5 s windows, 5 s windows are within 1 % at p90, and
    the whole recording is within 1 %. Single
    windows that end within ~100 ms after a load step can be off by a few % (10 Hz cannot see
    when within its 100 ms the reading changed); BENCHMARKS.md has the full distribution."""
    rec = load_recording(path)
    # Through the modelled counter, 1 s windows on the A100 square wave (a load that flips every
    # 52 ms) add 1.0-1.4 % (median): a window's end extrapolates the counter's last update, up to
    # 100 ms old, at the last period's power. The spec is for 10 Hz sampling (recorded mode);
    # the counter is held to it from 2 s windows on.
    lengths = (1.0, 2.0, 5.0) if mode == "recorded" else (2.0, 5.0)
    for length in lengths:
        errors = errors_added(rec, mode, length)
        assert statistics.median(errors) <= 1.0, (rec.name, length, sorted(errors)[-5:])
        if length == 5.0:
            p90 = sorted(errors)[int(0.9 * len(errors))]
            assert p90 <= 1.0, (rec.name, sorted(errors)[-5:])
    clock = FakeClock()
    gpu = SimulatedGPU.replay(rec, mode=mode, clock=clock)  # type: ignore[arg-type]
    (whole,) = replay_windows(gpu, clock, [(1.0, rec.end_s - 0.02)], meter_start_s=0.0)
    source = (
        "counter"
        if mode == "reference"
        else ("instant" if "power.draw.instant" in rec.fields else "average")
    )
    published = gpu.published_energy_between_j(
        gpu.created_s + whole.start_s,
        gpu.created_s + whole.end_s,
        source,  # type: ignore[arg-type]
    )
    assert whole.metered_j == pytest.approx(published, rel=0.01)


@needs_traces
def test_the_correction_brings_a_step_load_to_the_external_meter() -> None:
    rec = load_recording(recording("transient/A100"))
    results = {}
    for correction in (None, "auto"):
        clock = FakeClock()
        gpu = SimulatedGPU.replay(rec, clock=clock)
        options = {"gpu_correction": correction} if correction else {}
        (w,) = replay_windows(gpu, clock, [(1.0, rec.end_s - 0.02)], meter_start_s=0.0, **options)
        results[correction] = w.metered_j / rec.reference_energy_j(w.start_s, w.end_s) - 1
    assert results[None] == pytest.approx(-0.057, abs=0.01)  # the sensor reads 5-6 % low
    assert abs(results["auto"]) < 0.01  # the published A100 fit undoes it


# -- the "done when", as a user runs it ------------------------------------------------


@needs_traces
def test_meter_run_on_a_recorded_trace_matches_its_readings(tmp_path: Path) -> None:
    rec = load_recording(recording("transient/A100"))
    out = tmp_path / "r.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    env["METER_SIMULATE_GPUS"] = f"trace:{rec.path}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meter",
            "run",
            "--no-cpu",
            "--output",
            str(out),
            "--",
            "sleep",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text().splitlines()[-1])
    gpu = record["devices"]["gpu:0"]
    assert gpu["method"] == "simulated"
    # The replay started when the GPUs were opened, just before the run's window: how long
    # before depends on the machine's load (start-up, the counter's calibration: 0.07 s with
    # four busy processes on two cores), so the window's energy must match the recording's
    # over the run's duration starting somewhere in the first half second (369-434 J for a
    # 3 s run; the in-process replay tests pin the start exactly on a fake clock).
    duration = record["duration_s"]
    candidates = [
        rec.driver_energy_j("power.draw", lead, lead + duration)
        for lead in (i * 0.01 for i in range(51))
    ]
    assert min(candidates) * 0.98 <= gpu["energy_j"] <= max(candidates) * 1.02, (
        gpu["energy_j"],
        min(candidates),
        max(candidates),
    )

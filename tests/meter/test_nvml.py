"""NVML GPU devices (meter.devices.nvml) on simulated GPUs: no GPU needed."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pynvml
import pytest

from meter.devices import discover, simulated_nvml
from meter.devices.base import Device, DeviceInfo, Reading
from meter.devices.nvml import (
    DEFAULT_MAX_POWER_W,
    NvmlGpu,
    load_nvml,
    open_gpus,
    parse_visible_devices,
    resolve_visible,
)
from meter.errors import BadReading, ConfigError, DeviceError, MethodChanged
from meter.testing import nvml as testing_nvml
from meter.testing.nvml import FakeNVML, SimulatedGPU, simulated_gpus

MIG_A = "MIG-aaaaaaaa-1111-2222-3333-444444444444"
MIG_B = "MIG-bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No override, no simulation switch and no CUDA settings leak in from the machine."""
    monkeypatch.setattr(testing_nvml, "_installed", None)
    monkeypatch.setattr(testing_nvml, "_from_env", {})
    for name in ("METER_SIMULATE_GPUS", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    yield


class ManualClock:
    def __init__(self, t: float = 50.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class RecordingClock:
    """``time.perf_counter`` that remembers the last time it returned (the last NVML call's)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self) -> float:
        self.last = time.perf_counter()
        return self.last


class RealLooking(FakeNVML):
    """A fake without the ``simulated`` label, to check how real GPUs are labelled."""

    simulated = False


def four_gpus(model_1: str = "Simulated NVIDIA H100 80GB HBM3") -> FakeNVML:
    return FakeNVML(
        [
            SimulatedGPU(300.0, uuid="GPU-0aaa1111-0000-0000-0000-000000000000"),
            SimulatedGPU(200.0, uuid="GPU-1bbb2222-0000-0000-0000-000000000000", model=model_1),
            SimulatedGPU(100.0, uuid="GPU-1bbb3333-0000-0000-0000-000000000000"),
            SimulatedGPU(
                50.0, uuid="GPU-3ddd4444-0000-0000-0000-000000000000", mig_uuids=[MIG_A, MIG_B]
            ),
        ]
    )


def keys_and_indices(gpus: list[NvmlGpu]) -> list[tuple[str, int | None]]:
    return [(g.info.key, g.info.index) for g in gpus]


# -- the counter path --------------------------------------------------------------------------


def test_counter_gpu_energy_matches_the_simulator_over_real_time() -> None:
    clock = RecordingClock()
    sim = SimulatedGPU(
        lambda t: 250.0 + 100.0 * math.sin(2 * math.pi * t / 0.2), counter_update_s=0, clock=clock
    )
    # The device times its reads on its own clock (the same time base): `clock.last` stays the
    # time of the simulator's last NVML call.
    (gpu,), unavailable, warnings = open_gpus(
        nvml=FakeNVML([sim]), visible=None, clock=time.perf_counter
    )
    assert not unavailable and not warnings
    # A read times itself by the simulator's clock at the one NVML call it makes (opening
    # makes several: the counter, then the power limits).
    first = gpu.read()
    t_first = clock.last
    time.sleep(0.3)
    reading = gpu.read()
    t_read = clock.last
    assert reading.power_w is None and reading.energy_j is not None
    assert first.energy_j is not None and t_read - t_first >= 0.3
    # What the board's counter published between the two reads (the default sensor model
    # lags the true power a little, so this is not the true energy of the sine).
    published = sim.published_energy_between_j(t_first, t_read)
    assert reading.energy_j - first.energy_j == pytest.approx(published, rel=0.01)
    assert gpu.info.counter is True and gpu.info.method == "simulated"


def test_counter_gpu_reads_change_only_when_the_counter_publishes() -> None:
    clock = ManualClock()
    sim = SimulatedGPU(
        300.0, counter_update_s=0.1, counter_phase_s=0.05, clock=clock, initial_energy_j=0
    )
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    assert gpu.read().energy_j == 0.0
    readings = []
    for _ in range(4):  # t = 0.01 .. 0.04: before the first tick at 0.05
        clock.advance(0.01)
        readings.append(gpu.read().energy_j)
    assert readings == [0.0] * 4
    clock.advance(0.0105)  # t = 0.0505: just past the first tick, at 0.05
    assert gpu.read().energy_j == pytest.approx(15.0)
    clock.advance(0.099)  # t = 0.1495
    assert gpu.read().energy_j == pytest.approx(15.0)
    clock.advance(0.001)  # t = 0.1505: past the second tick
    assert gpu.read().energy_j == pytest.approx(45.0)


def test_counter_gpu_subtracts_the_value_at_open() -> None:
    clock = ManualClock()
    sim = SimulatedGPU(200.0, counter_update_s=0, clock=clock)
    nvml = FakeNVML([sim])
    clock.advance(10.0)  # the counter already holds 2 kJ when meter opens the GPU
    (gpu,), _, _ = open_gpus(nvml=nvml, visible=None)
    clock.advance(0.5)
    assert gpu.read() == Reading(energy_j=100.0)


def test_counter_restart_after_a_gpu_reset_does_not_go_backwards() -> None:
    class Resetting(FakeNVML):
        values = iter([5000, 7000, 300, 1300])

        def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
            return next(self.values)

    (gpu,), _, _ = open_gpus(nvml=Resetting([SimulatedGPU()]), visible=None)
    assert [gpu.read().energy_j for _ in range(3)] == [2.0, 2.3, 3.3]


def test_counter_reads_are_thread_safe_and_monotonic() -> None:
    sim = SimulatedGPU(lambda t: 100.0 + 80.0 * math.sin(50 * t), counter_update_s=0.001)
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    problems: list[str] = []

    def worker() -> None:
        last = -1.0
        for _ in range(1500):
            energy_j = gpu.read().energy_j
            assert energy_j is not None
            if energy_j < last:
                problems.append(f"{energy_j} < {last}")
            last = energy_j

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems


# -- counter values that cannot be true -----------------------------------------------------------


def ideal_gpu(clock: ManualClock, **options: Any) -> tuple[SimulatedGPU, NvmlGpu]:
    """A 300 W board whose continuous counter is exactly its energy (1 MJ at open), opened."""
    sim = SimulatedGPU(300.0, counter_update_s=0, sensor="ideal", clock=clock, **options)
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    return sim, gpu


def test_counter_step_back_is_a_bad_reading_not_a_restart() -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock)
    clock.advance(1.0)
    assert gpu.read().energy_j == 300.0
    sim.inject_counter_glitch(-1000)  # one read 1 J low, in the same instant
    with pytest.raises(BadReading) as raised:
        gpu.read()
    assert raised.value.device == "gpu:0"
    assert str(raised.value) == (
        "gpu:0 energy counter stepped back 1.0 J (1000300.0 -> 1000299.0 J) without restarting "
        "near zero: read ignored"
    )
    clock.advance(1.0)
    assert gpu.read().energy_j == 600.0  # no phantom joules: not 1,000,599 J
    assert gpu.validator is not None and gpu.validator.rejected == 1


def test_counter_jump_of_a_million_joules_is_rejected() -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock)
    clock.advance(0.1)
    sim.inject_counter_glitch(1_000_000_000)  # +1,000,000 J in 0.1 s
    with pytest.raises(BadReading, match=r"gpu:0 energy counter jumped 1000030\.0 J in 0\.1 s"):
        gpu.read()
    clock.advance(0.1)
    assert gpu.read().energy_j == pytest.approx(60.0)


def test_counter_restart_near_zero_counts_the_energy_since_the_restart() -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock)
    clock.advance(1.0)
    assert gpu.read().energy_j == 300.0
    sim.reset_counter()  # a driver reload
    clock.advance(0.5)
    assert gpu.read().energy_j == pytest.approx(450.0)  # 300 J + the 150 J since the restart
    assert gpu.validator is not None
    assert (gpu.validator.resets, gpu.validator.rejected) == (1, 0)
    assert gpu.validator.last.kind == "reset"


@pytest.mark.parametrize("shift_mj", [1_000_000_000, -100_000], ids=["jump", "step-back"])
def test_counter_that_moved_for_good_is_rebased_without_the_jump(shift_mj: int) -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock)
    for _ in range(10):
        clock.advance(0.1)
        gpu.read()
    assert gpu.read().energy_j == pytest.approx(300.0)
    sim.shift_counter(shift_mj)  # moves for good, then counts on normally
    for _ in range(2):  # REBASE_AFTER - 1 reads are ignored ...
        clock.advance(0.1)
        with pytest.raises(BadReading):
            gpu.read()
    clock.advance(0.1)
    reading = gpu.read()  # ... then the new level is the base
    assert reading.energy_j == pytest.approx(390.0, abs=0.01)  # the 1.3 s at 300 W, no jump
    validator = gpu.validator
    assert validator is not None
    assert (validator.rebases, validator.estimates, validator.rejected) == (1, 1, 2)
    assert validator.estimated_j == pytest.approx(30.0, abs=0.01)  # the 0.1 s before the move
    clock.advance(0.1)
    assert gpu.read().energy_j == pytest.approx(420.0, abs=0.01)


def test_counter_reads_are_timed_by_the_simulated_gpus_clock() -> None:
    clock = ManualClock()
    _, gpu = ideal_gpu(clock)
    clock.advance(10.0)  # 3 kJ in 10 s of the board's clock: plausible, whatever real time did
    assert gpu.read().energy_j == 3000.0


def test_counter_check_uses_the_power_limit() -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock, power_limit_w=350.0)
    assert gpu.validator is not None and gpu.validator.max_power_w == 350.0
    assert sim.calls["nvmlDeviceGetEnforcedPowerLimit"] == 1
    sim.inject_counter_glitch(400_000)  # 400 J at once: more than 2 x 350 W x 0.5 s
    with pytest.raises(BadReading, match="350 W"):
        gpu.read()


class NoLimits(FakeNVML):
    """A driver that answers no power limit at all."""

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


class OnlyManagementLimit(NoLimits):
    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return 250_000


class RaisedLimit(FakeNVML):
    """Enforced at 150 W now, but up to 400 W can be set mid-run."""

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return 150_000

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        return [100_000, 400_000]


@pytest.mark.parametrize(
    ("fake", "max_power_w"),
    [(NoLimits, DEFAULT_MAX_POWER_W), (OnlyManagementLimit, 250.0), (RaisedLimit, 400.0)],
)
def test_power_limit_fallbacks(fake: type[FakeNVML], max_power_w: float) -> None:
    (gpu,), _, _ = open_gpus(nvml=fake([SimulatedGPU()]), visible=None)
    assert gpu.validator is not None and gpu.validator.max_power_w == max_power_w


@pytest.mark.parametrize("kind", ["not_supported", "function_not_found"])
def test_counter_not_supported_mid_run_switches_to_power_readings(kind: str) -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock)
    clock.advance(1.0)
    assert gpu.read().energy_j == 300.0
    sim.inject_error(kind, calls=["nvmlDeviceGetTotalEnergyConsumption"])
    clock.advance(1.0)
    with pytest.raises(MethodChanged) as raised:
        gpu.read()
    assert raised.value.device == "gpu:0"
    assert isinstance(raised.value, DeviceError)
    assert "energy counter stopped answering mid-run" in str(raised.value)
    assert gpu.info.counter is False and gpu.info.method == "simulated"
    (note,) = [n for n in gpu.info.notes if "stopped answering mid-run" in n]
    assert "2.0 s after open" in note and "NVML_FI_DEV_POWER_INSTANT" in note
    assert "integrated from then on" in note
    clock.advance(0.5)
    assert gpu.read() == Reading(power_w=300.0)  # power from now on, no second MethodChanged
    assert gpu.read() == Reading(power_w=300.0)


def test_counter_not_supported_mid_run_on_a_real_gpu_is_sampled() -> None:
    clock = ManualClock()
    sim = SimulatedGPU(200.0, counter_update_s=0, instant_power=False, sensor="ideal", clock=clock)
    (gpu,), _, _ = open_gpus(nvml=RealLooking([sim]), visible=None)
    assert gpu.info.method == "counter"
    sim.inject_error("not_supported", calls=["nvmlDeviceGetTotalEnergyConsumption"])
    with pytest.raises(MethodChanged, match="nvmlDeviceGetPowerUsage"):
        gpu.read()
    assert (gpu.info.method, gpu.info.counter) == ("sampled", False)
    assert gpu.read() == Reading(power_w=200.0)


def test_other_counter_errors_mid_run_keep_the_counter() -> None:
    clock = ManualClock()
    sim, gpu = ideal_gpu(clock)
    sim.inject_error("timeout", calls=["nvmlDeviceGetTotalEnergyConsumption"])
    with pytest.raises(DeviceError) as raised:
        gpu.read()
    assert not isinstance(raised.value, MethodChanged | BadReading)
    sim.clear_errors()
    clock.advance(1.0)
    assert gpu.read().energy_j == 300.0 and gpu.info.counter is True


# -- the sampled path --------------------------------------------------------------------------


def integrate_power_j(
    gpu: NvmlGpu, clock: RecordingClock, duration_s: float
) -> tuple[float, float, float]:
    """Trapezoid integral of ``gpu.read().power_w`` over about ``duration_s``: (J, t0, t1).

    Each sample is timed by the simulator's own clock read, so a busy machine that delays the
    test between reads does not skew the comparison.
    """
    samples: list[tuple[float, float]] = []
    end = time.perf_counter() + duration_s
    while True:
        power_w = gpu.read().power_w
        assert power_w is not None
        samples.append((clock.last, power_w))
        if clock.last >= end:
            break
        time.sleep(0.002)
    energy_j = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(samples))
    return energy_j, samples[0][0], samples[-1][0]


def test_sampled_gpu_prefers_the_instant_power_field() -> None:
    clock = RecordingClock()
    sim = SimulatedGPU(
        lambda t: 200.0 + 60.0 * math.sin(2 * math.pi * t / 0.25), energy_counter=False, clock=clock
    )
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    assert gpu.info.counter is False and gpu.info.method == "simulated"
    assert any("NVML_FI_DEV_POWER_INSTANT" in note for note in gpu.info.notes)
    energy_j, t0, t1 = integrate_power_j(gpu, clock, 0.3)
    # Polled every 2 ms, the readings integrate to what the sensor published (its part-time
    # window and lag make that differ from the true energy of the sine).
    assert energy_j == pytest.approx(sim.published_energy_between_j(t0, t1, "instant"), rel=0.01)
    assert sim.calls["nvmlDeviceGetFieldValues"] > 10
    assert sim.calls["nvmlDeviceGetPowerUsage"] == 0


def test_instant_power_is_not_smoothed() -> None:
    clock = ManualClock()
    sim = SimulatedGPU(lambda t: 100.0 if t < 0.5 else 400.0, energy_counter=False, clock=clock)
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    clock.advance(0.8)
    assert gpu.read() == Reading(power_w=400.0)  # the 1 s average would say 212.5 W


def test_sampled_gpu_falls_back_to_the_averaged_power() -> None:
    clock = RecordingClock()
    sim = SimulatedGPU(180.0, energy_counter=False, instant_power=False, clock=clock)
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    assert gpu.info.counter is False
    assert any("1 s average" in note for note in gpu.info.notes)
    energy_j, t0, t1 = integrate_power_j(gpu, clock, 0.3)
    assert energy_j == pytest.approx(sim.energy_between_j(t0, t1), rel=0.01)
    assert sim.calls["nvmlDeviceGetPowerUsage"] > 10
    assert sim.calls["nvmlDeviceGetFieldValues"] == 1  # the probe only


def test_method_labels() -> None:
    gpus = [SimulatedGPU(), SimulatedGPU(energy_counter=False)]
    simulated, _, _ = open_gpus(nvml=FakeNVML(gpus), visible=None)
    assert [g.info.method for g in simulated] == ["simulated", "simulated"]
    assert [g.info.counter for g in simulated] == [True, False]
    assert all("simulated" in g.info.notes[0] for g in simulated)
    real, _, _ = open_gpus(nvml=RealLooking(gpus), visible=None)
    assert [g.info.method for g in real] == ["counter", "sampled"]


def test_device_info_and_protocol() -> None:
    sim = SimulatedGPU(model="Simulated L4", uuid="GPU-1234")
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    assert isinstance(gpu, Device)
    assert gpu.info == DeviceInfo(
        key="gpu:0",
        kind="gpu",
        method="simulated",
        counter=True,
        model="Simulated L4",
        uuid="GPU-1234",
        index=0,
        notes=gpu.info.notes,
    )
    gpu.close()
    gpu.close()  # idempotent
    with pytest.raises(DeviceError, match=r"gpu:0 \(Simulated L4\) was read after close"):
        gpu.read()


# -- errors --------------------------------------------------------------------------------------


def test_gpu_lost_mid_run_raises_device_error_naming_the_device() -> None:
    sim = SimulatedGPU(model="NVIDIA H100")
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    sim.inject_error("gpu_lost")
    with pytest.raises(DeviceError) as raised:
        gpu.read()
    assert raised.value.device == "gpu:0"
    assert str(raised.value).startswith("gpu:0 (NVIDIA H100) failed: GPU is lost. ")
    assert "nvidia-smi" in str(raised.value)
    assert isinstance(raised.value.__cause__, pynvml.NVMLError_GpuIsLost)
    sim.clear_errors()
    assert gpu.read().energy_j is not None


def test_sampled_gpu_errors_are_device_errors_too() -> None:
    sim = SimulatedGPU(energy_counter=False)
    (gpu,), _, _ = open_gpus(nvml=FakeNVML([sim]), visible=None)
    sim.inject_error("timeout", calls=["nvmlDeviceGetFieldValues"])
    with pytest.raises(DeviceError, match=r"gpu:0 .* failed: Timeout"):
        gpu.read()


def test_gpu_failing_its_probe_is_unavailable_with_the_reason() -> None:
    bad = SimulatedGPU(model="Broken GPU")
    bad.inject_error("unknown", calls=["nvmlDeviceGetTotalEnergyConsumption"])
    gpus, unavailable, _ = open_gpus(nvml=FakeNVML([SimulatedGPU(), bad]), visible=None)
    assert keys_and_indices(gpus) == [("gpu:0", 0)]
    (entry,) = unavailable
    assert (entry.key, entry.kind, entry.model) == ("gpu:1", "gpu", "Broken GPU")
    assert entry.reason == "gpu:1 (Broken GPU) could not be opened: Unknown Error."
    assert entry.fix and "nvidia-smi" in entry.fix


def test_gpu_without_any_power_reading_is_unavailable() -> None:
    bad = SimulatedGPU(energy_counter=False, instant_power=False)
    bad.inject_error("not_supported", calls=["nvmlDeviceGetPowerUsage"])
    gpus, unavailable, _ = open_gpus(nvml=FakeNVML([bad]), visible=None)
    assert gpus == []
    assert "neither an energy counter nor a power reading" in unavailable[0].reason


def test_gpu_lost_during_enumeration_is_unavailable() -> None:
    lost = SimulatedGPU()
    lost.inject_error("gpu_lost")
    gpus, unavailable, _ = open_gpus(nvml=FakeNVML([SimulatedGPU(), lost]), visible=None)
    assert keys_and_indices(gpus) == [("gpu:0", 0)]
    assert unavailable[0].key == "gpu:1"
    assert "GPU is lost" in unavailable[0].reason
    assert unavailable[0].fix and "Xid" in unavailable[0].fix


# -- loading NVML --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason", "fix"),
    [
        (
            "library_not_found",
            "NVML could not be loaded (NVML Shared Library Not Found): no NVIDIA driver on "
            "this machine.",
            "Install the NVIDIA driver, or set METER_SIMULATE_GPUS=300 to try meter on "
            "simulated GPUs.",
        ),
        ("driver_not_loaded", "(Driver Not Loaded)", "sudo modprobe nvidia"),
        ("no_permission", "(Insufficient Permissions)", "/dev/nvidia*"),
        ("unknown", "(Unknown Error)", "METER_SIMULATE_GPUS=300"),
    ],
)
def test_nvml_load_failure_is_one_unavailable_with_reason_and_fix(
    kind: str, reason: str, fix: str
) -> None:
    gpus, unavailable, warnings = open_gpus(nvml=FakeNVML([SimulatedGPU()], fail_init=kind))
    assert gpus == [] and warnings == []
    (entry,) = unavailable
    assert (entry.key, entry.kind) == ("gpu", "gpu")
    assert reason in entry.reason
    assert entry.fix is not None and fix in entry.fix


def test_load_nvml_real_library_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    assert load_nvml() == (
        None,
        "NVML could not be loaded (NVML Shared Library Not Found): no NVIDIA driver on this "
        "machine. Install the NVIDIA driver, or set METER_SIMULATE_GPUS=300 to try meter on "
        "simulated GPUs.",
    )
    gpus, unavailable, _ = open_gpus()
    assert gpus == [] and unavailable[0].fix is not None


def test_load_nvml_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)
    nvml, reason = load_nvml()
    assert nvml is None
    assert reason is not None and "pip install nvidia-ml-py" in reason


def test_discovery_uses_the_installed_simulator_and_initialises_it() -> None:
    with simulated_gpus([300.0]) as fake:
        assert simulated_nvml() is fake
        found = discover(cpu=False)
        assert [d.info.key for d in found.devices] == ["gpu:0"]
        assert fake.initialized
    assert simulated_nvml() is None  # the real GPUs again
    with simulated_gpus([]) as fake:
        testing_nvml._installed = FakeNVML([], fail_init="driver_not_loaded")
        found = discover(cpu=False)
        assert not found.devices and "Driver Not Loaded" in found.unavailable[0].reason


def test_simulated_gpus_run_the_real_device_code() -> None:
    with simulated_gpus([300.0, SimulatedGPU(120.0, energy_counter=False)]):
        gpus = discover(cpu=False).devices
    assert [(g.info.key, g.info.index) for g in gpus] == [("gpu:0", 0), ("gpu:1", 1)]
    assert [g.info.method for g in gpus] == ["simulated", "simulated"]
    assert gpus[1].read() == Reading(power_w=120.0)


def test_meter_simulate_gpus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_SIMULATE_GPUS", "300, 150:sampled")
    found = discover(cpu=False)
    assert not found.unavailable and not found.warnings
    gpus = found.devices
    assert [(g.info.key, g.info.counter, g.info.method) for g in gpus] == [
        ("gpu:0", True, "simulated"),
        ("gpu:1", False, "simulated"),
    ]
    assert gpus[1].info.uuid == "GPU-51m00000-0000-0000-0000-000000000001"
    assert gpus[1].read() == Reading(power_w=150.0)
    first, second = simulated_nvml(), simulated_nvml()
    assert first is second and getattr(first, "simulated", False)  # one shared simulator
    monkeypatch.setenv("METER_SIMULATE_GPUS", "300")
    assert simulated_nvml() is not first
    # The NVML device module itself only ever loads the real library.
    assert load_nvml()[0] is None or not getattr(load_nvml()[0], "simulated", False)


def test_meter_simulate_gpus_bad_value_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_SIMULATE_GPUS", "300,lots")
    with pytest.raises(ConfigError, match="'lots' is not a number of watts") as raised:
        discover(cpu=False)
    assert raised.value.setting == "METER_SIMULATE_GPUS"
    assert "METER_SIMULATE_GPUS=300,150" in str(raised.value)


def test_meter_simulate_gpus_empty_means_real_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_SIMULATE_GPUS", "  ")

    def no_library() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    nvml, reason = load_nvml()
    assert nvml is None and reason is not None and "no NVIDIA driver" in reason


# -- CUDA_VISIBLE_DEVICES ----------------------------------------------------------------------


def test_parse_visible_devices() -> None:
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("   ") == []
    assert parse_visible_devices("1, 0 ,GPU-abc") == ["1", "0", "GPU-abc"]


def test_unset_means_every_gpu_in_nvml_order() -> None:
    gpus, unavailable, warnings = open_gpus(nvml=four_gpus())
    assert keys_and_indices(gpus) == [("gpu:0", 0), ("gpu:1", 1), ("gpu:2", 2), ("gpu:3", 3)]
    assert not unavailable and not warnings
    assert not any("NVML index" in note for g in gpus for note in g.info.notes)


def test_empty_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert open_gpus(nvml=four_gpus()) == ([], [], [])


def test_indices_are_remapped_to_cuda_ordinals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    nvml = four_gpus()
    gpus, _, warnings = open_gpus(nvml=nvml)
    assert keys_and_indices(gpus) == [("gpu:0", 1), ("gpu:1", 0)]
    assert gpus[0].info.uuid == nvml.gpus[1].uuid
    assert "NVML index 1 (gpu:0 is the CUDA ordinal)" in gpus[0].info.notes
    assert not warnings


def test_visible_argument_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    gpus, _, _ = open_gpus(nvml=four_gpus(), visible="2")
    assert keys_and_indices(gpus) == [("gpu:0", 2)]
    gpus, _, _ = open_gpus(nvml=four_gpus(), visible=None)
    assert len(gpus) == 4


def test_uuid_and_unique_uuid_prefix() -> None:
    nvml = four_gpus()
    gpus, _, warnings = open_gpus(
        nvml=nvml, visible="GPU-3ddd4444-0000-0000-0000-000000000000, gpu-0AAA"
    )
    assert keys_and_indices(gpus) == [("gpu:0", 3), ("gpu:1", 0)]
    assert not warnings


def test_ambiguous_uuid_prefix_truncates_with_a_warning() -> None:
    gpus, _, (warning,) = open_gpus(nvml=four_gpus(), visible="0,GPU-1bbb,3")
    assert keys_and_indices(gpus) == [("gpu:0", 0)]
    assert "'GPU-1bbb' is an ambiguous UUID prefix" in warning
    assert "'3'" in warning and "only 0 stay visible" in warning


def test_unknown_uuid_truncates_with_a_warning() -> None:
    gpus, _, (warning,) = open_gpus(nvml=four_gpus(), visible="2,GPU-ffff,0")
    assert keys_and_indices(gpus) == [("gpu:0", 2)]
    assert "no GPU has this UUID" in warning and "nvidia-smi -L" in warning


def test_mig_uuid_maps_to_its_parent_and_says_so() -> None:
    gpus, _, warnings = open_gpus(nvml=four_gpus(), visible=MIG_A)
    (gpu,) = gpus
    assert keys_and_indices(gpus) == [("gpu:0", 3)]
    assert gpu.info.uuid == "GPU-3ddd4444-0000-0000-0000-000000000000"
    assert any(
        note.startswith(f"MIG instance {MIG_A}: NVML reports energy for the whole parent GPU")
        for note in gpu.info.notes
    )
    assert gpu.read().energy_j is not None  # read through the parent's handle
    assert not warnings


def test_old_style_mig_name_maps_to_its_parent() -> None:
    entry = "MIG-GPU-3ddd4444-0000-0000-0000-000000000000/1/0"
    (gpu,), _, _ = open_gpus(nvml=four_gpus(), visible=entry)
    assert gpu.info.index == 3
    assert any(entry in note for note in gpu.info.notes)


def test_two_mig_instances_of_one_gpu_are_not_counted_twice() -> None:
    gpus, _, warnings = open_gpus(nvml=four_gpus(), visible=f"{MIG_A},{MIG_B}")
    assert keys_and_indices(gpus) == [("gpu:0", 3), ("gpu:1", 3)]
    assert [g.info.counted for g in gpus] == [True, False]
    (warning,) = warnings
    assert "gpu:1" in warning and "same physical GPU as gpu:0" in warning


def test_unknown_mig_uuid_truncates() -> None:
    gpus, _, (warning,) = open_gpus(nvml=four_gpus(), visible="1,MIG-0000,0")
    assert keys_and_indices(gpus) == [("gpu:0", 1)]
    assert "'MIG-0000' is not a MIG instance NVML knows (Not Found)" in warning


@pytest.mark.parametrize(
    ("value", "kept", "why"),
    [
        ("0,7,1", [0], "'7' is out of range (this machine has 4 GPUs, indices 0..3)"),
        ("2,-1,1", [2], "'-1' is a negative index"),
        ("-1", [], "'-1' is a negative index"),
        ("1,0,1,2", [1, 0], "'1' is a duplicate (the same GPU as NVML index 1)"),
        ("1,GPU-1bbb2222,2", [1], "a duplicate"),
        ("0,cuda:1", [0], "'cuda:1' is not a GPU index, a GPU-<uuid> or a MIG-<uuid>"),
        ("0,,1", [0], "'' is not a GPU index"),
    ],
)
def test_invalid_entry_truncates_like_cuda(value: str, kept: list[int], why: str) -> None:
    gpus, _, warnings = open_gpus(nvml=four_gpus(), visible=value)
    assert [g.info.index for g in gpus] == kept
    assert [g.info.key for g in gpus] == [f"gpu:{i}" for i in range(len(kept))]
    (warning,) = warnings
    assert why in warning
    assert f"CUDA_VISIBLE_DEVICES={value.replace(' ', '')}" in warning
    assert "it and every entry after it" in warning


def test_mixed_models_with_indices_suggest_pci_bus_order(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = four_gpus(model_1="Simulated NVIDIA L4")
    _, _, (warning,) = open_gpus(nvml=nvml, visible="1,0")
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in warning and "Simulated NVIDIA L4" in warning
    _, _, (warning,) = open_gpus(nvml=nvml, visible=None)  # implicit indices too
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in warning
    _, _, warnings = open_gpus(nvml=nvml, visible="GPU-1bbb2222,GPU-0aaa")
    assert warnings == []  # UUIDs name GPUs whatever the order
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert open_gpus(nvml=nvml, visible="1,0")[2] == []
    _, warnings = resolve_visible(nvml, ["1"], device_order="FASTEST_FIRST")
    assert "CUDA_DEVICE_ORDER is FASTEST_FIRST" in warnings[0]


def test_resolve_visible_returns_parents_and_migs() -> None:
    nvml = four_gpus()
    nvml.nvmlInit()
    visible, warnings = resolve_visible(nvml, ["3", MIG_B])
    assert [(v.index, v.mig_uuid) for v in visible] == [(3, None), (3, MIG_B)]
    assert visible[1].handle is nvml.nvmlDeviceGetHandleByIndex(3)
    assert visible[1].name == "Simulated NVIDIA H100 80GB HBM3"
    assert warnings == []


# -- select ------------------------------------------------------------------------------------


def test_select_picks_ordinals_among_the_visible_gpus() -> None:
    gpus, _, _ = open_gpus(nvml=four_gpus(), visible="3,2,1", select=[2, 0])
    assert keys_and_indices(gpus) == [("gpu:2", 1), ("gpu:0", 3)]


def test_select_unknown_ordinal_names_the_available_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        open_gpus(nvml=four_gpus(), visible="2,0", select=[0, 5])
    assert raised.value.setting == "gpus"
    message = str(raised.value)
    assert "there is no gpu:5" in message
    assert "gpu:0 (Simulated NVIDIA H100 80GB HBM3), gpu:1 (" in message
    assert "ordinals 0, 1" in message


@pytest.mark.parametrize("select", [[-1], [0, 0], [True]])
def test_select_rejects_negative_duplicate_and_non_integer(select: list[int]) -> None:
    with pytest.raises(ConfigError, match="gpus="):
        open_gpus(nvml=four_gpus(), visible=None, select=select)


def test_select_when_no_gpu_is_visible() -> None:
    with pytest.raises(ConfigError, match="No GPU is visible"):
        open_gpus(nvml=four_gpus(), visible="", select=[0])


def test_select_makes_no_reads_of_unselected_gpus() -> None:
    nvml = four_gpus()
    open_gpus(nvml=nvml, visible=None, select=[1])
    assert nvml.gpus[0].calls["nvmlDeviceGetTotalEnergyConsumption"] == 0
    assert nvml.gpus[1].calls["nvmlDeviceGetTotalEnergyConsumption"] == 1

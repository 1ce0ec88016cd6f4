"""The simulated GPU and the fake NVML module (meter.testing.nvml)."""

from __future__ import annotations

import math
import threading
import time

import pynvml
import pytest

from meter.errors import ConfigError
from meter.testing.nvml import (
    FakeNVML,
    SimulatedGPU,
    installed_nvml,
    parse_simulate_env,
    simulated_gpus,
)


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def started(*gpus: SimulatedGPU) -> tuple[FakeNVML, list[object]]:
    nvml = FakeNVML(gpus)
    nvml.nvmlInit()
    return nvml, [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(len(gpus))]


# -- true energy ------------------------------------------------------------------------------


def test_constant_power_energy_is_exact(clock: ManualClock) -> None:
    gpu = SimulatedGPU(300.0, clock=clock)
    clock.advance(2.5)
    assert gpu.energy_j() == pytest.approx(750.0, rel=1e-12)
    assert gpu.energy_j(clock.t - 1.0) == pytest.approx(450.0, rel=1e-12)
    assert gpu.energy_between_j(clock.t - 1.0, clock.t) == pytest.approx(300.0, rel=1e-12)
    assert gpu.energy_j(gpu.created_s - 5.0) == 0.0  # nothing before creation
    assert gpu.power_at() == 300.0


def test_ramp_integrates_to_the_analytic_value(clock: ManualClock) -> None:
    gpu = SimulatedGPU(lambda t: 100.0 + 40.0 * t, clock=clock)
    clock.advance(10.0)
    # integral of 100 + 40 t over [0, 10] = 1000 + 20 * 100
    assert gpu.energy_j() == pytest.approx(3000.0, rel=0.005)
    assert gpu.energy_between_j(gpu.created_s + 2.0, gpu.created_s + 4.0) == pytest.approx(
        100.0 * 2 + 20.0 * (16 - 4), rel=0.005
    )
    assert gpu.power_at(gpu.created_s + 2.5) == pytest.approx(200.0)


def test_nonlinear_power_integrates_within_half_a_percent(clock: ManualClock) -> None:
    period_s = 0.37
    gpu = SimulatedGPU(lambda t: 200.0 + 150.0 * math.sin(2 * math.pi * t / period_s), clock=clock)
    clock.advance(1.234567)
    t = 1.234567
    exact = 200.0 * t + 150.0 * period_s / (2 * math.pi) * (
        1 - math.cos(2 * math.pi * t / period_s)
    )
    assert gpu.energy_j() == pytest.approx(exact, rel=0.005)


def test_energy_of_a_function_is_deterministic_and_monotonic(clock: ManualClock) -> None:
    gpu = SimulatedGPU(lambda t: 50.0 + 400.0 * (t % 0.05 < 0.01), clock=clock)
    clock.advance(3.0)
    t0 = gpu.created_s
    forward = [gpu.energy_j(t0 + k * 0.0137) for k in range(200)]
    assert forward == sorted(forward)
    # Queries into the past (from a checkpoint) give the very same numbers.
    again = [gpu.energy_j(t0 + k * 0.0137) for k in reversed(range(200))]
    assert again[::-1] == forward


def test_power_function_must_return_non_negative_watts(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match=r"power_w\(0.0\) returned -1.0"):
        SimulatedGPU(lambda t: -1.0, clock=clock)
    gpu = SimulatedGPU(lambda t: 100.0 if t < 1 else math.nan, clock=clock)
    clock.advance(2.0)
    with pytest.raises(ValueError, match="finite watts"):
        gpu.energy_j()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"power_w": -5.0}, "power_w must be a finite number of watts >= 0"),
        ({"power_w": math.inf}, "power_w must be a finite number of watts >= 0"),
        ({"counter_update_s": -0.1}, "counter_update_s must be >= 0"),
        ({"counter_phase_s": 0.2}, r"counter_phase_s must be in \[0, counter_update_s\)"),
        ({"power_limit_w": -1.0}, "power_limit_w"),
        ({"mig_uuids": ["GPU-123"]}, "must start with 'MIG-'"),
        ({"uuid": "1234"}, "must start with 'GPU-'"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatedGPU(**kwargs)  # type: ignore[arg-type]


# -- the energy counter ------------------------------------------------------------------------


def test_counter_publishes_only_every_update_period(clock: ManualClock) -> None:
    gpu = SimulatedGPU(
        300.0, counter_update_s=0.1, counter_phase_s=0.03, clock=clock, initial_energy_j=0
    )
    nvml, (handle,) = started(gpu)
    read = nvml.nvmlDeviceGetTotalEnergyConsumption

    assert read(handle) == 0  # before the first tick: the value at creation
    clock.advance(0.03)  # first tick
    assert read(handle) == 9000  # 300 W x 0.03 s
    values = []
    for _ in range(10):  # 10 reads within one period
        clock.advance(0.0099)
        values.append(read(handle))
    assert set(values) == {9000}
    clock.advance(0.0011)  # t = 0.13: second tick
    assert read(handle) == 39000
    clock.advance(0.5)
    assert read(handle) == 189000
    assert gpu.counter_time() == pytest.approx(gpu.created_s + 0.63)
    assert isinstance(read(handle), int)


@pytest.mark.parametrize("sensor", ["ideal", "h100", "a100"])
def test_counter_value_is_floor_of_millijoules_at_the_last_tick(
    clock: ManualClock, sensor: str
) -> None:
    gpu = SimulatedGPU(
        lambda t: 123.4567 + 10 * t,
        counter_update_s=0.1,
        counter_phase_s=0.0,
        clock=clock,
        initial_energy_j=0,
        sensor=sensor,
    )
    nvml, (handle,) = started(gpu)
    clock.advance(0.257)
    tick = gpu.counter_time()
    assert tick == pytest.approx(gpu.created_s + 0.2)
    published = gpu.published_energy_between_j(gpu.created_s, tick)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == math.floor(1000 * published)
    if sensor == "ideal":  # the ideal sensor's counter is the true energy itself
        assert math.floor(1000 * gpu.energy_j(tick)) == math.floor(1000 * published)


def test_counter_runs_before_creation_like_a_booted_board(clock: ManualClock) -> None:
    gpu = SimulatedGPU(300.0, counter_update_s=0.1, counter_phase_s=0.03, clock=clock)
    nvml, (handle,) = started(gpu)
    read = nvml.nvmlDeviceGetTotalEnergyConsumption
    # Before the first tick after creation the counter shows the tick before creation
    # (0.07 s earlier, at 300 W), not a fresh zero.
    assert read(handle) == round(1000 * (gpu.initial_energy_j - 300.0 * 0.07))
    clock.advance(0.03)
    assert read(handle) == round(1000 * gpu.initial_energy_j + 9000)


def test_continuous_counter_and_random_phase(clock: ManualClock) -> None:
    gpu = SimulatedGPU(200.0, counter_update_s=0, clock=clock, initial_energy_j=0)
    nvml, (handle,) = started(gpu)
    clock.advance(0.0123)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 2460
    phases = {SimulatedGPU(counter_update_s=0.1).counter_phase_s for _ in range(20)}
    assert all(0 <= p < 0.1 for p in phases) and len(phases) > 1


def test_constant_power_counter_reads_are_fast() -> None:
    nvml, (handle,) = started(SimulatedGPU(300.0))
    read = nvml.nvmlDeviceGetTotalEnergyConsumption
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        read(handle)
    per_read_s = (time.perf_counter() - start) / n
    assert per_read_s < 50e-6  # a few microseconds on a laptop; generous for CI


def test_counter_is_monotonic_under_concurrent_reads() -> None:
    gpu = SimulatedGPU(lambda t: 100.0 + 50.0 * math.sin(40 * t), counter_update_s=0.001)
    nvml, (handle,) = started(gpu)
    problems: list[str] = []

    def worker() -> None:
        last = -1
        for _ in range(2000):
            value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            if value < last:
                problems.append(f"{value} < {last}")
            last = value

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems
    assert gpu.calls["nvmlDeviceGetTotalEnergyConsumption"] == 6 * 2000


def test_no_energy_counter_raises_not_supported() -> None:
    nvml, (handle,) = started(SimulatedGPU(energy_counter=False))
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)


# -- power readings ----------------------------------------------------------------------------


def test_power_usage_is_a_one_second_average_and_the_field_is_instant(clock: ManualClock) -> None:
    gpu = SimulatedGPU(lambda t: 100.0 if t < 0.5 else 400.0, clock=clock, sensor="ideal")
    nvml, (handle,) = started(gpu)
    clock.advance(0.8)
    # Average over the 0.8 s since creation: (0.5 x 100 + 0.3 x 400) / 0.8 = 212.5 W.
    assert nvml.nvmlDeviceGetPowerUsage(handle) == pytest.approx(212500, abs=1)
    clock.advance(0.4)  # t = 1.2: the last second is [0.2, 1.2]
    assert nvml.nvmlDeviceGetPowerUsage(handle) == pytest.approx(
        (0.3 * 100 + 0.7 * 400) * 1000, abs=1
    )
    (field,) = nvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])
    assert field.fieldId == pynvml.NVML_FI_DEV_POWER_INSTANT
    assert field.nvmlReturn == pynvml.NVML_SUCCESS
    assert field.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    assert field.value.uiVal == 400000
    assert abs(field.timestamp - time.time() * 1e6) < 60e6


def test_instant_power_unsupported_comes_back_in_the_field() -> None:
    nvml, (handle,) = started(SimulatedGPU(instant_power=False))
    fields = nvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT, 42])
    assert [f.nvmlReturn for f in fields] == [pynvml.NVML_ERROR_NOT_SUPPORTED] * 2


def test_power_limit_name_uuid_and_driver() -> None:
    gpu = SimulatedGPU(model="Simulated A100", power_limit_w=400.0, uuid="GPU-abc")
    nvml, (handle,) = started(gpu)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(handle) == 400000
    assert nvml.nvmlDeviceGetPowerManagementLimit(handle) == 400000
    assert nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[1] == 400000
    assert nvml.nvmlDeviceGetName(handle) == "Simulated A100"
    assert nvml.nvmlDeviceGetUUID(handle) == "GPU-abc"
    assert nvml.nvmlDeviceGetIndex(handle) == 0
    assert isinstance(nvml.nvmlSystemGetDriverVersion(), str)


# -- the module: init, handles, MIG ----------------------------------------------------------


def test_calls_before_init_raise_uninitialized() -> None:
    nvml = FakeNVML([SimulatedGPU()])
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlShutdown()
    assert nvml.nvmlDeviceGetCount() == 1  # init is reference counted, like NVML's
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlShutdown()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("library_not_found", pynvml.NVMLError_LibraryNotFound),
        ("driver_not_loaded", pynvml.NVMLError_DriverNotLoaded),
        ("no_permission", pynvml.NVMLError_NoPermission),
    ],
)
def test_fail_init(kind: str, error: type[Exception]) -> None:
    nvml = FakeNVML([SimulatedGPU()], fail_init=kind)
    with pytest.raises(error):
        nvml.nvmlInit()
    assert not nvml.initialized


def test_unknown_error_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"gpu_lost.*not_supported"):
        FakeNVML([], fail_init="meltdown")
    with pytest.raises(ValueError, match="unknown NVML error kind 'meltdown'"):
        SimulatedGPU().inject_error("meltdown")


def test_handles_by_index_and_uuid() -> None:
    gpus = [SimulatedGPU(uuid="GPU-aaaa"), SimulatedGPU(uuid="GPU-bbbb")]
    nvml, handles = started(*gpus)
    assert nvml.nvmlDeviceGetCount() == 2
    assert nvml.nvmlDeviceGetHandleByUUID("GPU-bbbb") is handles[1]
    assert nvml.nvmlDeviceGetHandleByUUID(b"GPU-aaaa") is handles[0]
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetHandleByUUID("GPU-cccc")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetTotalEnergyConsumption(object())
    with pytest.raises(ValueError, match="unique"):
        FakeNVML([SimulatedGPU(uuid="GPU-x"), SimulatedGPU(uuid="GPU-x")])


def test_mig_handles_lead_to_their_parent() -> None:
    mig = "MIG-11111111-2222-3333-4444-555555555555"
    gpu = SimulatedGPU(uuid="GPU-parent", mig_uuids=[mig])
    nvml, (parent,) = started(gpu)
    handle = nvml.nvmlDeviceGetHandleByUUID(mig)
    assert bool(nvml.nvmlDeviceIsMigDeviceHandle(handle))  # a ctypes c_uint, as in pynvml
    assert not nvml.nvmlDeviceIsMigDeviceHandle(parent)
    assert nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle) is parent
    assert nvml.nvmlDeviceGetUUID(handle) == mig
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # NVML meters the whole GPU
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(parent)


def test_fake_reexports_the_real_constants_and_errors() -> None:
    nvml = FakeNVML([])
    assert nvml.NVMLError is pynvml.NVMLError
    assert nvml.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost  # type: ignore[attr-defined]
    assert nvml.NVML_ERROR_TIMEOUT == pynvml.NVML_ERROR_TIMEOUT  # type: ignore[attr-defined]
    assert nvml.NVML_FI_DEV_POWER_INSTANT == pynvml.NVML_FI_DEV_POWER_INSTANT
    assert nvml.NVML_SUCCESS == pynvml.NVML_SUCCESS
    assert nvml.simulated is True
    assert not hasattr(pynvml, "simulated")


# -- injected errors and call counts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("gpu_lost", pynvml.NVMLError_GpuIsLost),
        ("not_supported", pynvml.NVMLError_NotSupported),
        ("unknown", pynvml.NVMLError_Unknown),
        ("timeout", pynvml.NVMLError_Timeout),
    ],
)
def test_injected_errors_are_the_real_nvml_errors(kind: str, error: type[Exception]) -> None:
    gpu = SimulatedGPU()
    nvml, (handle,) = started(gpu)
    gpu.inject_error(kind)
    for call in (
        nvml.nvmlDeviceGetTotalEnergyConsumption,
        nvml.nvmlDeviceGetPowerUsage,
        nvml.nvmlDeviceGetName,
    ):
        with pytest.raises(error):
            call(handle)
    with pytest.raises(error):
        nvml.nvmlDeviceGetHandleByIndex(0)
    gpu.clear_errors()
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 300000


def test_injected_error_for_named_calls_and_after_a_delay(clock: ManualClock) -> None:
    gpu = SimulatedGPU(clock=clock)
    nvml, (handle,) = started(gpu)
    gpu.inject_error("gpu_lost", after_s=1.0, calls=["nvmlDeviceGetTotalEnergyConsumption"])
    nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    clock.advance(1.0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost) as raised:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    assert str(raised.value) == "GPU is lost"
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 300000  # other calls still work


def test_calls_are_counted_per_gpu_and_per_module() -> None:
    gpus = [SimulatedGPU(), SimulatedGPU()]
    nvml, handles = started(*gpus)
    for _ in range(3):
        nvml.nvmlDeviceGetTotalEnergyConsumption(handles[1])
    assert gpus[1].calls["nvmlDeviceGetTotalEnergyConsumption"] == 3
    assert gpus[0].calls["nvmlDeviceGetTotalEnergyConsumption"] == 0
    assert nvml.calls["nvmlInit"] == 1
    gpus[1].calls.clear()
    assert sum(gpus[1].calls.values()) == 0


# -- injected counter faults -------------------------------------------------------------------


def ideal(clock: ManualClock) -> tuple[SimulatedGPU, FakeNVML, object]:
    """A 300 W board whose continuous counter is exactly its energy, 1 MJ at creation."""
    gpu = SimulatedGPU(300.0, counter_update_s=0, sensor="ideal", clock=clock)
    nvml, (handle,) = started(gpu)
    return gpu, nvml, handle


def test_counter_glitch_lasts_the_given_reads(clock: ManualClock) -> None:
    gpu, nvml, handle = ideal(clock)
    read = nvml.nvmlDeviceGetTotalEnergyConsumption
    gpu.inject_counter_glitch(-1000, reads=2)
    assert [read(handle) for _ in range(3)] == [999_999_000, 999_999_000, 1_000_000_000]
    gpu.inject_counter_glitch(-(10**12))  # floored at 0, as a u64 counter is
    assert [read(handle) for _ in range(2)] == [0, 1_000_000_000]


def test_shift_counter_moves_it_for_good(clock: ManualClock) -> None:
    gpu, nvml, handle = ideal(clock)
    gpu.shift_counter(5_000_000)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 1_005_000_000
    clock.advance(1.0)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 1_005_300_000
    gpu.shift_counter(-7_000_000)  # and back, below where it was
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 998_300_000


def test_reset_counter_restarts_it_from_zero(clock: ManualClock) -> None:
    gpu, nvml, handle = ideal(clock)
    clock.advance(1.0)
    gpu.reset_counter()
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 0
    clock.advance(0.5)
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 150_000
    assert gpu.energy_j() == pytest.approx(450.0)  # the truth is untouched


def test_counter_faults_check_their_arguments() -> None:
    gpu = SimulatedGPU()
    with pytest.raises(ValueError, match="integer millijoules"):
        gpu.inject_counter_glitch(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reads must be an integer >= 1"):
        gpu.inject_counter_glitch(1000, reads=0)
    with pytest.raises(ValueError, match="integer millijoules"):
        gpu.shift_counter(True)


def test_simulation_clock_is_the_boards(clock: ManualClock) -> None:
    _, nvml, handle = ideal(clock)
    assert nvml.simulation_clock(handle) is clock


# -- METER_SIMULATE_GPUS and simulated_gpus ----------------------------------------------------


def test_parse_simulate_env_good_values() -> None:
    gpus = parse_simulate_env(" 300, 150:sampled ,0")
    assert [g.power_at() for g in gpus] == [300.0, 150.0, 0.0]
    assert [g.energy_counter for g in gpus] == [True, False, True]
    assert [g.uuid for g in gpus] == [
        f"GPU-51m00000-0000-0000-0000-00000000000{i}" for i in range(3)
    ]
    assert parse_simulate_env("300")[0].uuid == gpus[0].uuid  # stable across parses


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("abc", "'abc' is not a number of watts"),
        ("300,-5", "'-5' watts must be a finite number >= 0"),
        ("nan", "finite"),
        ("300:fast", "unknown mode 'fast'"),
        ("300,,150", r"entry 1 \(''\)"),
        ("300W", "not a number of watts"),
    ],
)
def test_parse_simulate_env_bad_values(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        parse_simulate_env(value)
    assert raised.value.setting == "METER_SIMULATE_GPUS"
    assert "METER_SIMULATE_GPUS=300,150" in str(raised.value)


def test_simulated_gpus_installs_and_restores_the_simulator() -> None:
    before = installed_nvml()
    with simulated_gpus([300.0, SimulatedGPU(75.0, energy_counter=False)]) as nvml:
        assert installed_nvml() is nvml
        assert isinstance(nvml, FakeNVML)
        assert [g.power_at() for g in nvml.gpus] == [300.0, 75.0]
        assert nvml.gpus[0].uuid == "GPU-51m00000-0000-0000-0000-000000000000"
        with simulated_gpus([1.0]) as inner:
            assert installed_nvml() is inner
        assert installed_nvml() is nvml
    assert installed_nvml() is before


def test_simulated_gpus_restores_the_simulator_after_an_exception() -> None:
    before = installed_nvml()
    with pytest.raises(RuntimeError), simulated_gpus([300.0]):
        raise RuntimeError("boom")
    assert installed_nvml() is before

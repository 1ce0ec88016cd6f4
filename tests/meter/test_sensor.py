"""The realistic sensor model of simulated GPUs (meter.testing.sensor, meter.testing.simgpu)."""

from __future__ import annotations

import math

import pynvml
import pytest

from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML, parse_simulate_env
from meter.testing.sensor import DEFAULT_SENSOR, SENSORS, Sensor, sensor_for_model, sensor_preset
from meter.testing.simgpu import SimulatedGPU


def board(power, clock: FakeClock, **options) -> tuple[SimulatedGPU, FakeNVML, object]:
    gpu = SimulatedGPU(power, clock=clock, **options)
    nvml = FakeNVML([gpu])
    nvml.nvmlInit()
    return gpu, nvml, nvml.nvmlDeviceGetHandleByIndex(0)


def instant_w(nvml: FakeNVML, handle: object) -> float:
    (field,) = nvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])
    assert field.nvmlReturn == pynvml.NVML_SUCCESS
    return field.value.uiVal / 1000.0


def square(on_w: float, off_w: float, period_s: float, on_s: float):
    return lambda t: on_w if (t % period_s) < on_s else off_w


def test_the_default_is_the_h100_preset_and_presets_are_sane() -> None:
    assert SimulatedGPU().sensor is SENSORS[DEFAULT_SENSOR] is SENSORS["h100"]
    h100 = SENSORS["h100"]
    assert (h100.update_s, h100.window_s, h100.coverage) == (0.1, 0.025, 0.25)
    for name, sensor in SENSORS.items():
        assert sensor.name == name and sensor.source
        assert sensor.counter == "exact"  # unverified either way: the presets pick one
    assert SENSORS["ideal"].ideal and not SENSORS["h100"].ideal


def test_the_part_time_window_misses_what_it_does_not_see() -> None:
    """A100/H100 readings average only the last 25 ms of each 100 ms: a load that is high for
    the first 75 ms of every period and low for the last 25 ms reads low all the time."""
    clock = FakeClock(0.0)
    sensor = Sensor(update_s=0.1, window_s=0.025)
    gpu, nvml, handle = board(
        square(400.0, 100.0, 0.1, 0.075), clock, sensor=sensor, counter_phase_s=0.0
    )
    readings = []
    clock.advance(0.1)  # (the reading published at creation saw the board before it)
    for _ in range(20):
        clock.advance(0.05)
        readings.append(instant_w(nvml, handle))
    assert set(readings) == {100.0}
    # The true average is 325 W; what the sensor publishes integrates to 100 W.
    t0, t1 = gpu.created_s + 0.2, gpu.created_s + 0.9
    assert gpu.energy_between_j(t0, t1) == pytest.approx(325.0 * 0.7, rel=0.01)
    assert gpu.published_energy_between_j(t0, t1, "instant") == pytest.approx(100.0 * 0.7)
    # With full coverage the same load reads its mean.
    clock2 = FakeClock(0.0)
    _, nvml2, handle2 = board(
        square(400.0, 100.0, 0.1, 0.075),
        clock2,
        sensor=Sensor(update_s=0.1, window_s=0.1),
        counter_phase_s=0.0,
    )
    clock2.advance(0.55)
    assert instant_w(nvml2, handle2) == pytest.approx(325.0, abs=0.5)


def test_readings_are_published_every_update_and_held() -> None:
    clock = FakeClock(0.0)
    _, nvml, handle = board(
        lambda t: 100.0 + 1000.0 * t,
        clock,
        sensor=Sensor(update_s=0.1, window_s=0.025),
        counter_phase_s=0.03,
    )
    clock.advance(0.131)  # last publication at 0.13: mean of 100 + 1000 t over [0.105, 0.13]
    assert instant_w(nvml, handle) == pytest.approx(100.0 + 1000.0 * 0.1175, abs=0.01)
    clock.advance(0.098)  # 0.229: still the 0.13 reading
    assert instant_w(nvml, handle) == pytest.approx(217.5, abs=0.01)
    clock.advance(0.002)  # 0.231: the 0.23 reading
    assert instant_w(nvml, handle) == pytest.approx(100.0 + 1000.0 * 0.2175, abs=0.01)


def test_gain_offset_and_delay() -> None:
    clock = FakeClock(0.0)
    sensor = Sensor(update_s=0.1, window_s=0.1, delay_s=0.2, gain=0.95, offset_w=-2.0)
    gpu, nvml, handle = board(
        lambda t: 100.0 if t < 1.0 else 300.0, clock, sensor=sensor, counter_phase_s=0.0
    )
    clock.advance(1.15)  # the 1.1 reading averages [0.8, 0.9]: still the low power
    assert instant_w(nvml, handle) == pytest.approx(0.95 * 100.0 - 2.0, abs=0.01)
    clock.advance(0.2)  # the 1.3 reading averages [1.0, 1.1]
    assert instant_w(nvml, handle) == pytest.approx(0.95 * 300.0 - 2.0, abs=0.01)
    # The exact counter integrates gain x true + offset, delayed the same way.
    t0, t1 = gpu.created_s + 2.0, gpu.created_s + 3.0
    assert gpu.published_energy_between_j(t0, t1) == pytest.approx(0.95 * 300.0 - 2.0)


def test_power_usage_is_the_mean_of_the_last_second_of_readings() -> None:
    clock = FakeClock(0.0)
    _, nvml, handle = board(
        lambda t: 100.0 if t < 1.0 else 400.0, clock, sensor="h100", counter_phase_s=0.0
    )
    clock.advance(1.45)  # the readings published at 0.5 .. 1.4: those of 1.1 .. 1.4 saw 400 W
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 220_000
    clock.advance(1.0)
    assert nvml.nvmlDeviceGetPowerUsage(handle) == 400_000
    # On A100 power.draw is the instantaneous reading itself.
    clock2 = FakeClock(0.0)
    _, nvml2, handle2 = board(
        lambda t: 100.0 if t < 1.0 else 400.0, clock2, sensor="a100", counter_phase_s=0.0
    )
    clock2.advance(1.2)
    a100 = SENSORS["a100"]
    assert nvml2.nvmlDeviceGetPowerUsage(handle2) == pytest.approx(
        1000 * (a100.gain * 400.0 + a100.offset_w), abs=1
    )
    (average,) = nvml2.nvmlDeviceGetFieldValues(handle2, [pynvml.NVML_FI_DEV_POWER_AVERAGE])
    assert average.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED  # GA100 has no separate average


@pytest.mark.parametrize("counter", ["exact", "sensor"])
def test_the_two_counter_models(counter: str) -> None:
    """``exact`` integrates the true power (scaled); ``sensor`` integrates the part-time
    readings, so on a load the window never sees it reads like the readings do."""
    clock = FakeClock(0.0)
    sensor = Sensor(update_s=0.1, window_s=0.025, counter=counter)  # type: ignore[arg-type]
    gpu, nvml, handle = board(
        square(400.0, 100.0, 0.1, 0.075),
        clock,
        sensor=sensor,
        counter_phase_s=0.0,
        counter_update_s=0.1,
        initial_energy_j=0.0,
    )
    clock.advance(0.5)
    t0, before = clock(), nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    clock.advance(2.0)
    counted_j = (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - before) / 1000.0
    if counter == "exact":
        assert counted_j == pytest.approx(325.0 * 2.0, rel=0.01)
    else:
        assert counted_j == pytest.approx(100.0 * 2.0, rel=0.01)
    assert counted_j == pytest.approx(gpu.published_energy_between_j(t0, clock()), abs=0.01)


def test_a_negative_offset_never_makes_the_counter_step_back() -> None:
    clock = FakeClock(0.0)
    sensor = Sensor(update_s=0.1, window_s=0.1, offset_w=-50.0)  # reads below zero at 10 W
    _, nvml, handle = board(10.0, clock, sensor=sensor, counter_update_s=0.1)
    values = []
    for _ in range(30):
        clock.advance(0.05)
        values.append(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    assert values == sorted(values)
    assert instant_w(nvml, handle) == 0.0  # readings are clamped at 0 W


def test_constant_power_reads_the_same_through_every_preset_without_gain() -> None:
    for name in ("ideal", "h100"):
        clock = FakeClock(0.0)
        _, nvml, handle = board(300.0, clock, sensor=name, initial_energy_j=0.0, counter_update_s=0)
        clock.advance(3.0)
        assert instant_w(nvml, handle) == 300.0
        assert nvml.nvmlDeviceGetPowerUsage(handle) == 300_000
        assert nvml.nvmlDeviceGetTotalEnergyConsumption(handle) == 900_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"update_s": -1.0}, "update_s must be"),
        ({"update_s": 0.1, "window_s": 0.2}, "cannot exceed update_s"),
        ({"gain": 0.0}, "gain must be > 0"),
        ({"offset_w": math.inf}, "offset_w must be finite"),
        ({"counter": "magic"}, "'exact' or 'sensor'"),
    ],
)
def test_bad_sensors_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sensor(**kwargs)  # type: ignore[arg-type]


def test_a_continuous_sensor_cannot_have_a_window() -> None:
    with pytest.raises(ValueError, match="window_s=0"):
        SimulatedGPU(sensor=Sensor(update_s=0.0, window_s=0.01))


def test_presets_by_name_and_by_model() -> None:
    assert sensor_preset("A100") is SENSORS["a100"]
    with pytest.raises(ValueError, match="unknown sensor preset 'v100'"):
        sensor_preset("v100")
    assert sensor_for_model("NVIDIA GeForce RTX 3090") is SENSORS["rtx3090"]
    assert sensor_for_model("A5000") is SENSORS["rtxa5000"]
    assert sensor_for_model("Tesla V100-SXM2") is SENSORS["h100"]  # the default, unknown family


def test_simulate_env_takes_a_preset_per_gpu() -> None:
    gpus = parse_simulate_env("300:a100, 200:sampled:ideal, 100")
    assert [g.sensor.name for g in gpus] == ["a100", "ideal", "h100"]  # type: ignore[union-attr]
    assert [g.energy_counter for g in gpus] == [True, False, True]

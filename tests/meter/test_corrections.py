"""Optional GPU sensor gain/offset corrections (meter.devices.corrections, gpu_correction=)."""

from __future__ import annotations

import pytest

from meter.core import Meter, options_from_env
from meter.devices.corrections import CORRECTIONS, correction_for, resolve_correction
from meter.errors import ConfigError
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML
from meter.testing.replay import replay_windows
from meter.testing.sensor import SENSORS
from meter.testing.simgpu import SimulatedGPU


def test_families_by_model_name() -> None:
    assert correction_for("NVIDIA A100-PCIE-40GB") is CORRECTIONS["a100"]
    assert correction_for("NVIDIA GeForce RTX 4090") is CORRECTIONS["rtx4090"]
    assert correction_for("NVIDIA H100 80GB HBM3") is None  # no published fit
    assert resolve_correction(None, "A100") is None
    assert resolve_correction("off", "A100") is None
    assert resolve_correction("auto", "NVIDIA A100") is CORRECTIONS["a100"]
    assert resolve_correction("RTX3090", "anything") is CORRECTIONS["rtx3090"]
    with pytest.raises(ConfigError, match="'h100' is not a GPU family with a published"):
        resolve_correction("h100", "x")


def test_it_is_off_by_default_and_labelled_when_on() -> None:
    """A board with the A100 sensor's gain and offset, at 200 W: uncorrected, meter reports what
    the sensor says (0.954 x 200 - 1.18 W); corrected, the true 200 W, and says so."""
    results = {}
    for setting in (None, "auto"):
        clock = FakeClock()
        gpu = SimulatedGPU(200.0, clock=clock, sensor="a100", model="NVIDIA A100-PCIE-40GB")
        options = {"gpu_correction": setting} if setting else {}
        (w,) = replay_windows(gpu, clock, [(1.0, 3.0)], meter_start_s=0.0, **options)
        results[setting] = w.metered_j / 2.0
    a100 = SENSORS["a100"]
    assert results[None] == pytest.approx(a100.gain * 200.0 + a100.offset_w, rel=1e-3)
    assert results["auto"] == pytest.approx(200.0, rel=1e-3)

    m = Meter(
        nvml=FakeNVML([SimulatedGPU(200.0, sensor="a100", model="NVIDIA A100-PCIE-40GB")]),
        cpu=False,
        carbon=False,
        idle_file="/nonexistent",
        gpu_correction="auto",
    )
    try:
        assert any("corrected for the a100 sensor" in n for n in m.devices[0].notes)
        with m.measure() as w:
            pass
        d = w.result.devices["gpu:0"]
        assert d.correction == "a100" and d.to_dict()["correction"] == "a100"
        assert d.method == "simulated"  # the method does not change; the correction is noted
    finally:
        m.close()


def test_a_gpu_without_a_published_fit_is_left_alone() -> None:
    m = Meter(
        nvml=FakeNVML([SimulatedGPU(300.0)]),
        cpu=False,
        carbon=False,
        idle_file="/nonexistent",
        gpu_correction="auto",
    )
    try:
        assert m.corrections == (None,)
        assert not any("corrected" in n for n in m.devices[0].notes)
    finally:
        m.close()


def test_the_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv("METER_GPU_CORRECTION", "auto")
    assert options_from_env()["gpu_correction"] == "auto"
    monkeypatch.setenv("METER_GPU_CORRECTION", "v100")
    with pytest.raises(ConfigError, match="v100"):
        options_from_env()

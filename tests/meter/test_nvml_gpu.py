"""NVML GPU devices on a real NVIDIA GPU (marker ``gpu``; skipped where NVML does not load)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from meter.devices.nvml import open_gpus

pytestmark = pytest.mark.gpu


@pytest.fixture
def real_nvml() -> Iterator[Any]:
    """The real pynvml, initialised; skip with the reason when there is no usable NVIDIA GPU."""
    try:
        import pynvml
    except ImportError as error:
        pytest.skip(f"needs a real NVIDIA GPU: nvidia-ml-py is not installed ({error})")
    try:
        pynvml.nvmlInit()
    except Exception as error:
        pytest.skip(f"needs a real NVIDIA GPU: pynvml.nvmlInit() failed ({error})")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            pytest.skip("needs a real NVIDIA GPU: NVML loads but lists no GPU")
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def test_counter_energy_matches_nvml_directly(real_nvml: Any) -> None:
    gpus, unavailable, _ = open_gpus(nvml=real_nvml, visible=None)
    try:
        assert not unavailable, unavailable
        counters = [g for g in gpus if g.info.counter]
        if not counters:
            pytest.skip(f"no GPU here has the NVML energy counter (Volta or newer): {gpus}")
        assert all(g.info.method == "counter" for g in counters)
        for gpu in counters:
            handle = real_nvml.nvmlDeviceGetHandleByUUID(gpu.info.uuid)
            direct = real_nvml.nvmlDeviceGetTotalEnergyConsumption
            # Bracket each device read with direct reads: the counter may publish in between.
            before_0 = direct(handle)
            first = gpu.read().energy_j
            after_0 = direct(handle)
            time.sleep(1.0)
            before_1 = direct(handle)
            second = gpu.read().energy_j
            after_1 = direct(handle)
            assert first is not None and second is not None
            measured_j = second - first
            low_j = (before_1 - after_0) / 1000.0
            high_j = (after_1 - before_0) / 1000.0
            assert measured_j > 0, f"{gpu.info.key}: no energy over 1 s"
            assert low_j * 0.98 <= measured_j <= high_j * 1.02, (
                f"{gpu.info.key}: {measured_j} J over 1 s, NVML directly says {low_j}..{high_j} J"
            )
    finally:
        for gpu in gpus:
            gpu.close()

"""On a real NVIDIA GPU: meter's windows against direct NVML counter reads, and the sampled
method against the counter on the same load. Skipped with a reason where there is no GPU.

Load comes from torch matrix products when torch with CUDA is installed; otherwise the GPU
is measured idle (still a valid comparison, at idle power).
"""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.gpu

pynvml = pytest.importorskip("pynvml")


def _nvml_or_skip() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"needs a real NVIDIA GPU: pynvml.nvmlInit() failed ({exc})")
    if pynvml.nvmlDeviceGetCount() == 0:
        pytest.skip("needs a real NVIDIA GPU: NVML sees none")
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as exc:
        pytest.skip(f"GPU 0 has no energy counter (pre-Volta?): {exc}")


@pytest.fixture(scope="module")
def gpu_load():
    """Keep GPU 0 busy with matmuls in a thread while the module's tests run."""
    _nvml_or_skip()
    stop = threading.Event()
    thread = None
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.randn(8192, 8192, device="cuda:0")

            def spin() -> None:
                while not stop.is_set():
                    for _ in range(4):
                        a @ a
                    torch.cuda.synchronize()

            thread = threading.Thread(target=spin, daemon=True)
            thread.start()
            time.sleep(2.0)  # let clocks and power settle
    except ImportError:
        pass
    yield thread is not None
    stop.set()
    if thread is not None:
        thread.join()


def _direct_mj() -> tuple[float, int]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    return time.perf_counter(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)


@pytest.mark.parametrize("seconds", [1.0, 5.0])
def test_counter_windows_match_direct_nvml_reads(gpu_load, seconds):
    from meter import Meter

    m = Meter(gpus=[0], cpu=False, idle_file="/none")
    m.wait_ready()
    try:
        # Direct reads bracket the window from outside; each is stale by up to one counter
        # update, so compare over a span long enough for that to stay small.
        _, before = _direct_mj()
        with m.measure() as w:
            time.sleep(seconds)
        _, after = _direct_mj()
    finally:
        m.close()
    direct_j = (after - before) / 1000.0
    got = w.result.devices["gpu:0"]
    assert got.method == "counter"
    tolerance = 0.01 if seconds >= 5 else 0.05
    assert got.energy_j == pytest.approx(direct_j, rel=tolerance), (got.energy_j, direct_j)


def test_sampled_method_against_counter_on_the_same_load(gpu_load):
    from meter import Meter
    from meter.devices.base import DeviceInfo, Reading

    handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    class InstantPower:
        """GPU 0 read as a power device (the sampled path), for comparison."""

        info = DeviceInfo(key="gpu:0s", kind="gpu", method="sampled", counter=False)

        def read(self) -> Reading:
            (v,) = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])
            if v.nvmlReturn != pynvml.NVML_SUCCESS:
                return Reading(power_w=pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
            return Reading(power_w=v.value.uiVal / 1000.0)

        def close(self) -> None:
            pass

    from meter.devices.nvml import open_gpus

    (counter_gpu,), _, _ = open_gpus(select=[0])
    m = Meter(devices=[counter_gpu, InstantPower()], interval_s=0.1, idle_file="/none")
    m.wait_ready()
    try:
        with m.measure() as w:
            time.sleep(10.0)
    finally:
        m.close()
    counter_j = w.result.devices["gpu:0"].energy_j
    sampled_j = w.result.devices["gpu:0s"].energy_j
    assert sampled_j == pytest.approx(counter_j, rel=0.05), (sampled_j, counter_j)

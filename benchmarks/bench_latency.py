"""Budget: ``measure()`` enter+exit < 50 microseconds on simulated GPUs (no CUDA sync).

``with m.measure("x"): pass`` in a tight loop, timed per batch of 1000, on 1 and 8 simulated
GPUs, with boundary reads of the energy counter (``read_devices=True``, the default) and without
(``read_devices=False``: extrapolated from the sampler, what the ASGI middleware uses). The
sampler runs at 10 Hz meanwhile, as in real use. The simulated GPUs are read through a fake NVML
written in Python, so a boundary read costs what that fake costs; it is timed alone too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from common import simulated_meter, summarize

BUDGET_US = 50.0
BATCH = 1000


def _batches(fn: Callable[[], None], batches: int, per_batch: int = BATCH) -> list[float]:
    """Microseconds per call of ``fn``, one figure per batch of ``per_batch`` calls."""
    out = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        out.append((time.perf_counter() - t0) / per_batch * 1e6)
    return out


def _window_loop(m: Any, read: bool, batches: int) -> list[float]:
    measure = m.measure
    out = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(BATCH):
            with measure("x", read_devices=read):
                pass
        out.append((time.perf_counter() - t0) / BATCH * 1e6)
    return out


def _reads_per_window(m: Any, nvml: Any, read: bool, windows: int = 500) -> float:
    """Mean NVML energy-counter calls per window over ``windows`` back-to-back windows. With
    the phase lock, a boundary reads the device only when a new counter value may have been
    published since the last one seen, so the mean is below two per GPU. Sampler ticks in the
    meantime (about one per 100 ms) are counted too: a few calls in all."""

    def count() -> int:
        return sum(g.calls["nvmlDeviceGetTotalEnergyConsumption"] for g in nvml.gpus)

    before = count()
    for _ in range(windows):
        with m.measure("x", read_devices=read):
            pass
    return (count() - before) / windows


def run(quick: bool) -> dict[str, Any]:
    batches = 5 if quick else 20
    configs = []
    for n_gpus in (1, 8):
        for read in (True, False):
            with simulated_meter(n_gpus, 0.1) as (m, nvml):
                m.wait_ready()
                _window_loop(m, read, 1)  # warm-up batch
                per_call = summarize(_window_loop(m, read, batches))
                reads = _reads_per_window(m, nvml, read)
                configs.append(
                    {
                        "gpus": n_gpus,
                        "read_devices": read,
                        "us": per_call,
                        "nvml_reads_per_window": reads,
                        "pass": per_call["median"] < BUDGET_US,
                    }
                )

    # The fake NVML alone, and one device read through the real device code on top of it.
    with simulated_meter(1, 0.1) as (m, nvml):
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        energy = nvml.nvmlDeviceGetTotalEnergyConsumption
        device = m.ledger.tracks[0].device
        fake_call = summarize(_batches(lambda: energy(handle), batches, 10 * BATCH))
        device_read = summarize(_batches(device.read, batches, 10 * BATCH))

    return {
        "batch": BATCH,
        "batches": batches,
        "sampler_interval_s": 0.1,
        "configs": configs,
        "fake_nvml_energy_call_us": fake_call,
        "device_read_us": device_read,
        "budget_us": BUDGET_US,
    }

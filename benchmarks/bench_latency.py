"""Budget: ``measure()`` enter+exit <= 35 microseconds on simulated GPUs (no CUDA sync).

``with m.measure("x"): pass`` in a tight loop, timed per batch of 1000, on 1 and 8 simulated
GPUs, with boundary reads of the energy counter (``read_devices=True``, the default) and without
(``read_devices=False``: extrapolated from the sampler, what the ASGI middleware uses). The
sampler runs at 10 Hz meanwhile, as in real use. The simulated GPUs are read through a fake NVML
written in Python, so a boundary read costs what that fake costs; it is timed alone too.

Two more figures. **Between training steps**: the same window around a 10 ms numpy matrix
product, each boundary timed alone: there the CPU's caches hold the step's data, not meter's
code, and a window costs several times its tight-loop figure (no budget here; the side-by-side
benchmark judges the cost on a whole training loop). **The first async window**: a fresh meter
on 8 simulated GPUs opened by ``async with m.measure()`` while a task ticks every millisecond
on the same event loop; the largest gap between two ticks must stay < 5 ms (the meter starts in
an executor: opening the devices and locking onto the counters takes about half a second). The
same with ``m.start()`` called on the loop shows what a blocking start would cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from common import simulated_meter, summarize

BUDGET_US = 35.0
BATCH = 1000
GAP_BUDGET_MS = 5.0


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


def _between_steps(m: Any, read: bool, steps: int) -> dict[str, Any]:
    """Enter and exit of a window around a ~10 ms numpy step, each timed alone (µs)."""
    import numpy as np

    a = np.ones((700, 700), dtype=np.float32)
    for _ in range(3):
        _ = a @ a  # warm-up
    enter, exit_ = [], []
    clock = time.perf_counter
    for _ in range(steps):
        t0 = clock()
        w = m.measure("step", read_devices=read)
        w.__enter__()
        t1 = clock()
        _ = a @ a  # the step
        t2 = clock()
        w.__exit__(None)
        t3 = clock()
        enter.append((t1 - t0) * 1e6)
        exit_.append((t3 - t2) * 1e6)
    return {"enter_us": summarize(enter), "exit_us": summarize(exit_)}


def _ticker_gap(opener: Callable[[Any], Any], n_gpus: int = 8) -> dict[str, float]:
    """Largest gap (ms) between the wake-ups of a 1 ms ticker task while ``opener(meter)``
    (a coroutine function) opens a fresh meter's first window on the same event loop."""
    import asyncio

    with simulated_meter(n_gpus, 0.1) as (m, _nvml):

        async def main() -> dict[str, float]:
            gaps: list[float] = []
            done = asyncio.Event()

            async def ticker() -> None:
                last = time.perf_counter()
                while not done.is_set():
                    await asyncio.sleep(0.001)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0.02)  # the ticker is running
            t0 = time.perf_counter()
            await opener(m)
            opened = time.perf_counter() - t0
            await asyncio.sleep(0.02)
            done.set()
            await task
            return {"max_gap_ms": max(gaps) * 1e3, "open_ms": opened * 1e3}

        return asyncio.run(main())


async def _async_window(m: Any) -> None:
    async with m.measure("first"):
        pass


async def _blocking_start(m: Any) -> None:
    m.start()  # on the event loop: what the first window would cost without the executor
    async with m.measure("first"):
        pass


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
                        "pass": per_call["median"] <= BUDGET_US,
                    }
                )

    between = []
    for read in (True, False):
        with simulated_meter(1, 0.1) as (m, _nvml):
            m.wait_ready()
            between.append({"read_devices": read, **_between_steps(m, read, 50 if quick else 200)})

    repeats = 2 if quick else 5
    first_async = [_ticker_gap(_async_window) for _ in range(repeats)]
    blocking = [_ticker_gap(_blocking_start) for _ in range(repeats)]
    worst_gap = max(r["max_gap_ms"] for r in first_async)

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
        "between_steps": between,
        "first_async": {
            "max_gap_ms": summarize([r["max_gap_ms"] for r in first_async]),
            "open_ms": summarize([r["open_ms"] for r in first_async]),
            "blocking_max_gap_ms": summarize([r["max_gap_ms"] for r in blocking]),
            "worst_gap_ms": worst_gap,
            "budget_ms": GAP_BUDGET_MS,
            "pass": worst_gap < GAP_BUDGET_MS,
        },
    }

"""Accuracy on the simulator (no budget here: the budgets are for real GPUs).

Windows of 1 s, 0.5 s, 50 ms and 10 ms on three simulated GPUs metered at once, with the
default H100-like sensor model (`meter.testing.sensor`: readings that average the last 25 ms of
each 100 ms, a 1 s `nvmlDeviceGetPowerUsage`), against what each board *published* (its energy
counter, or the integral of its instantaneous readings held from one to the next: meter's own
error) and against its *true* energy (what the sensor misses is included):

* ``counter``: constant 300 W, energy counter published every 100 ms, sampler at 10 Hz;
* ``sampled 10 Hz`` and ``sampled 100 Hz``: no energy counter (``energy_counter=False``), a
  sine-wave power trace read through the instantaneous power field, sampler at 10 and 100 Hz.

The reference energy of a window is taken between the simulator's clock read just before and
just after the window (``gpu.published_energy_between_j``, ``gpu.energy_between_j``); the
midpoint of the outer bracket (before enter to after exit) and the inner one (after enter to
before exit) is used, and half their difference is reported as the bracket uncertainty (the
windows on the two meters are nested, each bracket holds only its own window's enter and exit).
Windows shorter than the counter's period or the sampling interval are reported for
information; the last column says whether meter itself flagged them ``approximate``.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any

from common import NO_IDLE_FILE

#: Window lengths (seconds) and whether the counter-based figure is expected to be exact.
DURATIONS_S = (1.0, 0.5, 0.05, 0.01)
SINE_MEAN_W, SINE_AMPLITUDE_W, SINE_PERIOD_S = 250.0, 100.0, 2.0


def _sine(t: float) -> float:
    return SINE_MEAN_W + SINE_AMPLITUDE_W * math.sin(2 * math.pi * t / SINE_PERIOD_S)


def run(quick: bool) -> dict[str, Any]:
    from meter import Meter
    from meter.testing import FakeNVML, SimulatedGPU

    windows = 5 if quick else 20
    counter_gpu = SimulatedGPU(300.0, counter_update_s=0.1)
    sampled_10 = SimulatedGPU(_sine, energy_counter=False)
    sampled_100 = SimulatedGPU(_sine, energy_counter=False)
    a = Meter(
        cpu=False,
        nvml=FakeNVML([counter_gpu, sampled_10]),
        interval_s=0.1,
        idle_file=NO_IDLE_FILE,
    )
    b = Meter(cpu=False, nvml=FakeNVML([sampled_100]), interval_s=0.01, idle_file=NO_IDLE_FILE)
    # (label, meter, device key on that meter, simulator)
    subjects = [
        ("counter, 300 W constant, 100 ms counter, sampler 10 Hz", a, "gpu:0", counter_gpu),
        ("sampled, sine 250 ± 100 W (2 s period), sampler 10 Hz", a, "gpu:1", sampled_10),
        ("sampled, sine 250 ± 100 W (2 s period), sampler 100 Hz", b, "gpu:0", sampled_100),
    ]
    methods = {}
    for label, meter, key, _ in subjects:
        info = meter.ledger.tracks[meter.ledger.keys.index(key)].info
        methods[label] = info.method + (" (counter)" if info.counter else "")
    rng = random.Random(1)
    errors: dict[tuple[str, float], list[float]] = {}
    true_errors: dict[tuple[str, float], list[float]] = {}
    brackets: dict[tuple[str, float], list[float]] = {}
    approximate: dict[tuple[str, float], int] = {}
    try:
        a.wait_ready()
        b.wait_ready()
        time.sleep(1.0)  # a full second of samples behind the first window
        for duration in DURATIONS_S:
            for _ in range(windows):
                time.sleep(rng.uniform(0.0, 0.1))  # a different counter phase every window
                # Each window's bracket holds its own enter and exit only.
                t = [time.perf_counter()]
                with a.measure("accuracy") as wa:
                    t.append(time.perf_counter())
                    with b.measure("accuracy") as wb:
                        t.append(time.perf_counter())
                        time.sleep(duration)
                        t.append(time.perf_counter())
                    t.append(time.perf_counter())
                t.append(time.perf_counter())
                bracket = {id(a): (t[0], t[1], t[4], t[5]), id(b): (t[1], t[2], t[3], t[4])}
                results = {id(a): wa.result, id(b): wb.result}
                for label, meter, key, gpu in subjects:
                    result = results[id(meter)]
                    assert result is not None
                    before, entered, leaving, after = bracket[id(meter)]
                    source = "counter" if gpu.energy_counter else "instant"
                    outer = gpu.published_energy_between_j(before, after, source)
                    inner = gpu.published_energy_between_j(entered, leaving, source)
                    truth = (outer + inner) / 2
                    true_j = (
                        gpu.energy_between_j(before, after) + gpu.energy_between_j(entered, leaving)
                    ) / 2
                    device = result.devices[key]
                    errors.setdefault((label, duration), []).append(
                        (device.energy_j - truth) / truth * 100
                    )
                    true_errors.setdefault((label, duration), []).append(
                        (device.energy_j - true_j) / true_j * 100
                    )
                    brackets.setdefault((label, duration), []).append(
                        (outer - inner) / 2 / truth * 100
                    )
                    approximate[(label, duration)] = approximate.get((label, duration), 0) + int(
                        device.approximate
                    )
    finally:
        a.close()
        b.close()

    meter_of = {label: meter for label, meter, _, _ in subjects}
    rows = []
    for label, _, _, _ in subjects:
        for duration in DURATIONS_S:
            errs = errors[(label, duration)]
            abs_errs = [abs(e) for e in errs]
            rows.append(
                {
                    "device": label,
                    "interval_s": meter_of[label].interval_s,
                    "method": methods[label],
                    "window_s": duration,
                    "windows": len(errs),
                    "median_abs_err_pct": statistics.median(abs_errs),
                    "max_abs_err_pct": max(abs_errs),
                    "median_err_pct": statistics.median(errs),
                    "median_abs_err_true_pct": statistics.median(
                        abs(e) for e in true_errors[(label, duration)]
                    ),
                    "bracket_pct": max(brackets[(label, duration)]),
                    "approximate": approximate[(label, duration)],
                }
            )
    return {"windows_per_length": windows, "rows": rows}

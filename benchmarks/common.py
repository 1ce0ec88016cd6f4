"""Helpers shared by the benchmarks: summary statistics, per-thread CPU time, simulated meters."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

#: An idle-power file that does not exist, so a user's `meter calibrate` file cannot change
#: what the benchmarks compute (the pytest plugin does the same).
NO_IDLE_FILE = "/nonexistent/meter-benchmarks-idle.json"


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, p10/p90 (inclusive quantiles), min, max and count of ``values``."""
    data = sorted(float(v) for v in values)
    if not data:
        return {"n": 0}
    if len(data) >= 2:
        deciles = statistics.quantiles(data, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = data[0]
    return {
        "n": len(data),
        "median": statistics.median(data),
        "p10": p10,
        "p90": p90,
        "min": data[0],
        "max": data[-1],
    }


def find_thread(name: str) -> threading.Thread:
    """The live thread called ``name`` (the sampler is ``meter-sampler``)."""
    for thread in threading.enumerate():
        if thread.name == name:
            return thread
    raise RuntimeError(f"no thread named {name!r} is running")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(thread: threading.Thread) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by ``thread``, read from outside it.

    Two readings: ``/proc/self/task/<tid>/stat`` utime + stime (resolution one clock tick,
    ``1 / SC_CLK_TCK``, 10 ms on Linux) and the thread's POSIX CPU clock
    (``pthread_getcpuclockid``, nanoseconds); the two agree to within a tick.
    """
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        # Fields after the parenthesised command name (which may contain spaces): utime and
        # stime are fields 14 and 15 of proc(5), i.e. 12 and 13 after the ")".
        fields = f.read().rsplit(")", 1)[1].split()
    proc_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    assert thread.ident is not None
    clock_s = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return proc_s, clock_s


@contextlib.contextmanager
def simulated_meter(n_gpus: int, interval_s: float, **options: Any) -> Iterator[tuple[Any, Any]]:
    """``(meter, fake_nvml)``: a `Meter` on ``n_gpus`` simulated 300 W GPUs (no CPU devices),
    not yet started, closed on exit."""
    from meter import Meter
    from meter.testing import simulated_gpus

    with simulated_gpus([300.0] * n_gpus) as nvml:
        m = Meter(cpu=False, interval_s=interval_s, idle_file=NO_IDLE_FILE, **options)
        try:
            yield m, nvml
        finally:
            m.close()

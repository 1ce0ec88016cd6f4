"""Budget: the sampler thread uses < 1% of one core at 10 Hz with 8 GPUs.

A `Meter` on 8 simulated GPUs with no window open; the CPU time of the thread named
``meter-sampler`` is read from outside it (``/proc/self/task/<tid>/stat``, and the thread's
POSIX CPU clock for sub-tick resolution) once per second. The first second is left out of the
steady rate: start-up calibration polls the counters fast for up to about half a second, and
is reported on its own. The simulated GPUs are read through a fake NVML written in Python, which
costs more per read than the real C library (see the latency benchmark).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from common import find_thread, simulated_meter, summarize, thread_cpu_s

BUDGET_PCT = 1.0
GPUS = 8
SKIP_S = 1.0


def _one(interval_s: float, duration_s: float, phase_lock: bool = True) -> dict[str, Any]:
    with simulated_meter(GPUS, interval_s, phase_lock=phase_lock) as (m, _):
        t_start = time.perf_counter()
        m.start()  # returns once calibration is done
        start_s = time.perf_counter() - t_start
        thread = find_thread(m.sampler.name)
        cal_proc, cal_clock = thread_cpu_s(thread)
        time.sleep(max(SKIP_S - (time.perf_counter() - t_start), 0.0))
        t0 = time.perf_counter()
        proc0, clock0 = thread_cpu_s(thread)
        ticks0 = m.sampler.ticks
        captures0 = sum(t.lock_state().captures for t in m.ledger.tracks)
        per_second: list[float] = []
        last_t, last_clock = t0, clock0
        while time.perf_counter() - t0 < duration_s:
            time.sleep(1.0)
            now = time.perf_counter()
            _, clock = thread_cpu_s(thread)
            per_second.append((clock - last_clock) / (now - last_t) * 100)
            last_t, last_clock = now, clock
        t1 = time.perf_counter()
        proc1, clock1 = thread_cpu_s(thread)
        ticks = m.sampler.ticks - ticks0
        captures = sum(t.lock_state().captures for t in m.ledger.tracks) - captures0
        locked = sum(1 for t in m.ledger.tracks if t.lock_state().locked)
        # Step captures per counter since start (calibration itself is not one).
        per_counter = [t.lock_state().captures for t in m.ledger.tracks if t.snapshot().stepping]
        # Times a counter lost its lock (a missed capture twice in a row, or a step where none
        # was predicted); each costs a recalibration that polls for up to half a second.
        unlocks = sum(t.lock_state().failures for t in m.ledger.tracks)
        elapsed = t1 - t0
    pct_clock = (clock1 - clock0) / elapsed * 100
    return {
        "interval_s": interval_s,
        "hz": round(1 / interval_s),
        "gpus": GPUS,
        "measured_s": elapsed,
        "cpu_pct_proc": (proc1 - proc0) / elapsed * 100,
        "cpu_pct_clock": pct_clock,
        "cpu_pct_per_second": summarize(per_second),
        "ticks": ticks,
        "ticks_per_s": ticks / elapsed,
        "cpu_us_per_tick": (clock1 - clock0) / ticks * 1e6 if ticks else None,
        "phase_lock": phase_lock,
        "captures": captures,
        "captures_per_counter": per_counter,
        "unlocks": unlocks,
        "locked_counters": locked,
        "startup_wall_s": start_s,
        "startup_cpu_ms_proc": cal_proc * 1e3,
        "startup_cpu_ms_clock": cal_clock * 1e3,
        "pass": pct_clock < BUDGET_PCT if interval_s == 0.1 and phase_lock else None,
    }


def _bare_wait(interval_s: float, duration_s: float) -> dict[str, Any]:
    """CPU of a thread that only loops on ``Event.wait(interval_s)``: the floor any Python
    thread waking at that rate pays on this machine, whatever it does when awake."""
    stop = threading.Event()
    thread = threading.Thread(target=_wait_loop, args=(stop, interval_s), name="bare-wait")
    thread.start()
    try:
        time.sleep(0.2)
        t0 = time.perf_counter()
        _, c0 = thread_cpu_s(thread)
        time.sleep(duration_s)
        _, c1 = thread_cpu_s(thread)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        thread.join()
    return {
        "interval_s": interval_s,
        "hz": round(1 / interval_s),
        "cpu_pct": (c1 - c0) / elapsed * 100,
        "cpu_us_per_wake": (c1 - c0) / (elapsed / interval_s) * 1e6,
    }


def _wait_loop(stop: threading.Event, interval_s: float) -> None:
    wake = threading.Event()
    while not stop.is_set():
        wake.wait(interval_s)


def run(quick: bool) -> dict[str, Any]:
    duration_s = 3.0 if quick else 10.0
    diagnostic_s = 2.0 if quick else 5.0
    return {
        "skip_s": SKIP_S,
        "duration_s": duration_s,
        "configs": [_one(0.1, duration_s), _one(0.01, duration_s)],
        # Diagnostics: the ticks alone (no phase lock: no calibration, no step captures),
        # and an empty thread waking at the same rates.
        "no_phase_lock": [
            _one(0.1, diagnostic_s, phase_lock=False),
            _one(0.01, diagnostic_s, phase_lock=False),
        ],
        "bare_wait": [_bare_wait(0.1, diagnostic_s), _bare_wait(0.01, diagnostic_s)],
        "budget_pct": BUDGET_PCT,
    }

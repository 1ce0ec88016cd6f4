"""Budget: memory stays bounded over an unbounded run (the sample history is a ring buffer).

A `Meter` on 8 simulated GPUs sampling at 1 kHz (``interval_s=0.001``), so that a 30 s run
records as many samples as 50 minutes at the default 10 Hz, while the main thread opens and
closes 100,000 windows named from a small set (plain and shared, with and without boundary
reads). RSS (psutil), ``len(ledger.samples)`` and ``len(ledger.coarse)`` are recorded every
second. PASS when RSS grows by less than 5 MB from one second after the fine history is full to the
end. The run goes on past its nominal length (up to 3x) if the history is not full early
enough to leave 10 s (quick: 2 s) of steady state.

The coarse history (one entry per 100 samples, also capped at ``history`` entries) fills only
after ``100 x history`` samples: 600,000 with the default history, more than this run records.
A second, shorter run with ``history=10`` (the smallest allowed) fills both rings after 1,000
samples, then starts tracemalloc; once the rings have turned over completely under it (so that
every entry in them was allocated while tracing), traced memory must stay flat.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import time
import tracemalloc
from typing import Any

import psutil
from common import simulated_meter

BUDGET_MB = 5.0
GPUS = 8
#: Windows per burst; a 1 ms sleep between bursts lets the sampler keep close to 1 kHz.
BURST = 8
#: History of the second run: the coarse ring fills after 100 x 10 = 1,000 samples.
SMALL_HISTORY = 10
NAMES = ("forward", "backward", "step", "eval", "request")


def _windows(m: Any, count: int) -> None:
    """Open and close ``count`` windows of assorted kinds."""
    measure = m.measure
    for i in range(count):
        name = NAMES[i % len(NAMES)]
        if i % 4 == 3:
            with measure(name, group="requests", read_devices=False):
                pass
        else:
            with measure(name, read_devices=i % 2 == 0):
                pass


def _deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and what it references (tuples, dataclass fields, floats)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, (tuple, list)):
        size += sum(_deep_size(item, seen) for item in obj)
    elif dataclasses.is_dataclass(obj):
        if hasattr(obj, "__dict__"):
            size += sys.getsizeof(vars(obj))
        size += sum(_deep_size(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    return size


def _run(
    history: int | None, duration_s: float, windows_per_s: float, settle_s: float, trace: bool
) -> dict[str, Any]:
    """One metered run of at least ``duration_s``, longer (up to 3x) until the rings have been
    full for ``settle_s`` seconds. With ``trace``, tracemalloc starts once both rings are full,
    and growth is judged once they have turned over completely under it."""
    process = psutil.Process()
    options = {} if history is None else {"history": history}
    rows: list[dict[str, Any]] = []
    gc.collect()
    with simulated_meter(GPUS, 0.001, **options) as (m, _):
        ledger = m.ledger
        fine_cap = ledger.samples.maxlen or 0
        coarse_cap = ledger.coarse.maxlen or 0
        turnover = fine_cap + ledger.coarse_every * coarse_cap  # samples to renew both rings
        m.start()
        t0 = time.perf_counter()
        rss_start = process.memory_info().rss
        done = 0
        fine_full: int | None = None  # indices into rows
        coarse_full: int | None = None
        base: int | None = None  # the row growth is judged from
        trace_ticks = 0
        base_snapshot: tracemalloc.Snapshot | None = None
        while True:
            second = len(rows) + 1
            deadline = t0 + second
            target = round(windows_per_s * second)
            while time.perf_counter() < deadline - 0.001:
                burst = min(BURST, target - done)
                if burst > 0:
                    _windows(m, burst)
                    done += burst
                time.sleep(0.001)
            row: dict[str, Any] = {
                "t_s": round(time.perf_counter() - t0, 2),
                "rss_mb": process.memory_info().rss / 2**20,
                "samples": len(ledger.samples),
                "coarse": len(ledger.coarse),
                "ticks": m.sampler.ticks,
                "windows": done,
            }
            if tracemalloc.is_tracing():
                row["traced_kb"] = tracemalloc.get_traced_memory()[0] / 2**10
            rows.append(row)
            i = len(rows) - 1
            if fine_full is None and row["samples"] >= fine_cap:
                fine_full = i
                if not trace:
                    base = i + 1  # one second later: the fill itself may be mid-row
            if coarse_full is None and row["coarse"] >= coarse_cap:
                coarse_full = i
                if trace:
                    tracemalloc.start()
                    trace_ticks = row["ticks"]
            renewed = "traced_kb" in row and row["ticks"] - trace_ticks >= turnover
            if trace and base is None and renewed:
                base = i
                base_snapshot = tracemalloc.take_snapshot()
            settled = base is not None and i >= base + settle_s
            if (second >= duration_s and settled) or second >= 3 * duration_s:
                break
        end_snapshot = tracemalloc.take_snapshot() if base_snapshot is not None else None
        sample_bytes = _deep_size(ledger.samples[-1]) if ledger.samples else None
        coarse_bytes = _deep_size(ledger.coarse[-1]) if ledger.coarse else None
        ticks = m.sampler.ticks
        elapsed = time.perf_counter() - t0
        sampler_error = m.sampler.error
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    out: dict[str, Any] = {
        "history": fine_cap,
        "coarse_cap": coarse_cap,
        "duration_s": elapsed,
        "ticks": ticks,
        "ticks_per_s": ticks / elapsed,
        "windows": done,
        "rss_start_mb": rss_start / 2**20,
        "fine_full_s": None if fine_full is None else rows[fine_full]["t_s"],
        "coarse_full_s": None if coarse_full is None else rows[coarse_full]["t_s"],
        "sample_bytes": sample_bytes,
        "coarse_entry_bytes": coarse_bytes,
        "rows": rows,
        "sampler_error": sampler_error,
    }
    end = rows[-1]
    if base is not None and base < len(rows) - 1:
        out["base_s"] = rows[base]["t_s"]
        out["rss_base_mb"] = rows[base]["rss_mb"]
        out["rss_end_mb"] = end["rss_mb"]
        out["rss_growth_mb"] = end["rss_mb"] - rows[base]["rss_mb"]
        if trace:
            out["traced_base_kb"] = rows[base]["traced_kb"]
            out["traced_end_kb"] = end["traced_kb"]
            out["traced_growth_kb"] = end["traced_kb"] - rows[base]["traced_kb"]
            steady = [row["traced_kb"] for row in rows[base:]]
            out["traced_min_kb"], out["traced_max_kb"] = min(steady), max(steady)
        if end_snapshot is not None and base_snapshot is not None:
            diff = end_snapshot.compare_to(base_snapshot, "filename")
            meter_files = [d for d in diff if f"{os.sep}meter{os.sep}" in d.traceback[0].filename]
            out["traced_growth_meter_kb"] = sum(d.size_diff for d in meter_files) / 2**10
            out["traced_growth_by_file"] = [
                {"file": str(d.traceback[0].filename), "kb": d.size_diff / 2**10}
                for d in sorted(diff, key=lambda d: d.size_diff, reverse=True)[:3]
            ]
    return out


def run(quick: bool) -> dict[str, Any]:
    duration_s = 8 if quick else 30
    windows_per_s = 100_000 / 30
    main = _run(None, duration_s, windows_per_s, settle_s=2 if quick else 10, trace=False)
    small = _run(
        SMALL_HISTORY, 6 if quick else 12, windows_per_s / 3, settle_s=2 if quick else 5, trace=True
    )
    growth = main.get("rss_growth_mb")
    return {
        "gpus": GPUS,
        "interval_s": 0.001,
        "main": main,
        "small_history": small,
        "budget_mb": BUDGET_MB,
        "pass": None if growth is None else growth < BUDGET_MB,
    }

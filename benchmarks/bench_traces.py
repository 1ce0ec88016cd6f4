"""Against an external power meter: real GPU power recordings (no budget; meter adds <= 1 %).

Every recording in ``../shared/data/gpu-power-traces`` (Yang et al., SC'24; MIT) holds a ~4.8 kHz
external meter on a GPU's power cables and PCIe slot and, at the same time, the driver's power
readings as nvidia-smi published them every ~7-15 ms. Each is replayed through meter's real
device code, ledger, sampler and windows (`meter.testing.replay`, on a fake clock), and the
methods below measure windows of 0.1, 0.5, 1 and 5 s, tiled back to back at 12 phases (so some
straddle the load steps), and the whole recording (from 1 s in, after the counters' lock):

* **meter sampled 10 Hz / 100 Hz**: *recorded* mode, NVML returns exactly the recorded
  readings (held from row to row); meter reads ``power.draw.instant`` where the file has it,
  else ``power.draw``, as on a GPU without an energy counter;
* **meter counter**: *reference* mode, the board's true power is the external meter's trace
  and NVML's counter comes from the sensor preset of its family (`meter.testing.sensor`,
  counter = exact integral of the gain-scaled power); **counter, part-time** is the same with
  the counter integrating only what the part-time sensor sees. The recordings have no energy
  counter, so neither is evidence of what a real counter does;
* **meter 10 Hz + correction**: the sampled method with ``gpu_correction="auto"``
  (`meter.devices.corrections`: the published gain and offset of the family undone);
* **CodeCarbon-like**: ``power.draw`` read every 15 s (and at stop) times the time since the
  last read;
* **Zeus-like**: ``power.draw`` polled every 100 ms, trapezoid over the polls inside the window
  (0 J when fewer than two).

Each window's error is taken against the external meter (trapezoid of its samples) and against
the integral of what the driver published in the field the method reads (each reading held
until the next row): the second is the error the method adds of its own. ``--fit`` also fits
the sensor model (update period, averaging window, delay, gain, offset) to each recording.

    python benchmarks/bench_traces.py                     # print the section
    python benchmarks/bench_traces.py --into BENCHMARKS.md --fit
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meter.testing.clock import FakeClock  # noqa: E402
from meter.testing.replay import replay_windows  # noqa: E402
from meter.testing.simgpu import SimulatedGPU  # noqa: E402
from meter.testing.traces import Recording, find_recordings, load_recording  # noqa: E402

WINDOWS_S = (0.1, 0.5, 1.0, 5.0)
PHASES = 12
START_S = 1.0  # windows start after the counters' calibration at meter start
CODECARBON_INTERVAL_S = 15.0
ZEUS_INTERVAL_S = 0.1

Window = tuple[float, float]


def tiled_windows(rec: Recording, length_s: float, phase: int) -> list[Window]:
    """Back-to-back windows of ``length_s`` from ``START_S + phase/PHASES x length_s``."""
    out: list[Window] = []
    a = START_S + length_s * phase / PHASES
    while a + length_s <= rec.end_s - 0.02:
        out.append((a, a + length_s))
        a += length_s
    return out


def meter_field(rec: Recording) -> str:
    """The recorded field meter's sampled path reads: the instantaneous one where present."""
    return "power.draw.instant" if "power.draw.instant" in rec.fields else "power.draw"


# -- the methods ---------------------------------------------------------------------------------


def _meter(
    rec: Recording,
    windows: Sequence[Window],
    *,
    mode: str,
    interval_s: float = 0.1,
    meter_options: dict[str, Any] | None = None,
    **gpu: Any,
) -> list[tuple[Window, float, float]]:
    """(actual window, metered joules, what the board published over it) through meter on a
    replay. The actual window can start a few ms late when a counter calibration ran at its
    start time. Published: the field meter reads (recorded mode) or the counter (reference)."""
    clock = FakeClock()
    board = SimulatedGPU.replay(rec, mode=mode, clock=clock, **gpu)  # type: ignore[arg-type]
    done = replay_windows(
        board, clock, windows, interval_s=interval_s, meter_start_s=0.0, **(meter_options or {})
    )
    source = (
        "counter"
        if mode == "reference"
        else ("instant" if "power.draw.instant" in rec.fields else "average")
    )
    base = board.created_s
    return [
        (
            (w.start_s, w.end_s),
            w.metered_j,
            board.published_energy_between_j(base + w.start_s, base + w.end_s, source),  # type: ignore[arg-type]
        )
        for w in done
    ]


def meter_sampled(interval_s: float, correction: str | None = None) -> Callable[..., Any]:
    options = {"gpu_correction": correction} if correction else None

    def run(rec: Recording, windows: Sequence[Window]) -> list[tuple[Window, float, float]]:
        return _meter(rec, windows, mode="recorded", interval_s=interval_s, meter_options=options)

    return run


def meter_counter(counter: str = "exact") -> Callable[..., Any]:
    def run(rec: Recording, windows: Sequence[Window]) -> list[tuple[Window, float, float]]:
        from meter.testing.sensor import sensor_for_model

        sensor = sensor_for_model(rec.path.name).with_counter(counter)  # type: ignore[arg-type]
        return _meter(rec, windows, mode="reference", sensor=sensor)

    return run


def codecarbon_like(rec: Recording, windows: Sequence[Window]) -> list[tuple[Window, float, float]]:
    out = []
    for a, b in windows:
        energy, last = 0.0, a
        t = a + CODECARBON_INTERVAL_S
        while t < b:
            energy += rec.driver_power_w("power.draw", t) * (t - last)
            last, t = t, t + CODECARBON_INTERVAL_S
        energy += rec.driver_power_w("power.draw", b) * (b - last)
        out.append(((a, b), energy, rec.driver_energy_j("power.draw", a, b)))
    return out


def zeus_like(
    rec: Recording, windows: Sequence[Window], seed: int = 1
) -> list[tuple[Window, float, float]]:
    rng = random.Random(seed)
    phase = rng.uniform(0.0, ZEUS_INTERVAL_S)
    polls = [phase + k * ZEUS_INTERVAL_S for k in range(int(rec.end_s / ZEUS_INTERVAL_S) + 2)]
    watts = [rec.driver_power_w("power.draw", t) for t in polls]
    out = []
    for a, b in windows:
        inside = [(t, w) for t, w in zip(polls, watts, strict=True) if a <= t <= b]
        energy = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(inside))
        out.append(((a, b), energy, rec.driver_energy_j("power.draw", a, b)))
    return out


#: Each method: (recording, windows) -> [(actual window, joules, what the driver published)].
METHODS: dict[str, Callable[..., Any]] = {
    "meter sampled 10 Hz": meter_sampled(0.1),
    "meter sampled 100 Hz": meter_sampled(0.01),
    "meter 10 Hz + correction": meter_sampled(0.1, "auto"),
    "meter counter (sensor model)": meter_counter("exact"),
    "meter counter, part-time (model)": meter_counter("sensor"),
    "CodeCarbon-like (15 s)": codecarbon_like,
    "Zeus-like (100 ms polls)": zeus_like,
}


# -- errors --------------------------------------------------------------------------------------


def _pct(x: float, ref: float) -> float:
    return 100.0 * (x / ref - 1.0) if ref > 0 else math.nan


def _stats(errors: Sequence[float]) -> dict[str, float]:
    a = sorted(abs(e) for e in errors if math.isfinite(e))
    if not a:
        return {"n": 0}
    p90 = a[min(len(a) - 1, math.ceil(0.9 * len(a)) - 1)]
    return {"n": len(a), "median": statistics.median(a), "p90": p90, "max": a[-1]}


#: The driver's readings catch up with a load switch within about this long (one or two
#: publications of ~100 ms), so a window that starts this soon after a switch still sees it.
SETTLE_S = 0.25


def _straddles(rec: Recording, window: Window) -> bool:
    """Whether the window sees a load switch: it contains one, or starts within `SETTLE_S`
    after one."""
    a, b = window
    return any(a - SETTLE_S <= s <= b for s in rec.switches_s)


def evaluate(rec: Recording, method: str) -> dict[str, Any]:
    fn = METHODS[method]
    out: dict[str, Any] = {}
    lengths: list[float | str] = [*WINDOWS_S, "whole"]
    for length in lengths:
        if length == "whole":
            measured = fn(rec, [(START_S, rec.end_s - 0.02)])
        else:
            measured = []
            for phase in range(PHASES):
                windows = tiled_windows(rec, float(length), phase)
                if windows:
                    measured += fn(rec, windows)
        ref_err, drv_err, straddle = [], [], []
        for (a, b), joules, published in measured:
            ref_err.append(_pct(joules, rec.reference_energy_j(a, b)))
            drv_err.append(_pct(joules, published))
            if _straddles(rec, (a, b)):
                straddle.append(drv_err[-1])
        out[str(length)] = {
            "reference": _stats(ref_err),
            "driver": _stats(drv_err),
            "straddling_driver": _stats(straddle),
            "signed_reference_median": statistics.median(ref_err) if ref_err else math.nan,
        }
    return out


# -- the driver against the reference ------------------------------------------------------------


def driver_vs_reference(rec: Recording) -> dict[str, Any]:
    """What the driver's own readings are worth: each field's held integral against the external
    meter, over 1 s windows (tiled at 12 phases), 5 s windows and the whole recording; and the
    same after undoing the family's published gain and offset."""
    from meter.devices.corrections import correction_for

    correction = correction_for(rec.path.name)
    out: dict[str, Any] = {}
    for field in rec.fields:
        row: dict[str, Any] = {}
        for length in (1.0, 5.0, "whole"):
            if length == "whole":
                windows = [(START_S, rec.end_s - 0.02)]
            else:
                windows = [w for p in range(PHASES) for w in tiled_windows(rec, float(length), p)]
            naive, fixed = [], []
            for a, b in windows:
                ref = rec.reference_energy_j(a, b)
                drv = rec.driver_energy_j(field, a, b)
                naive.append(_pct(drv, ref))
                if correction is not None:
                    fixed.append(_pct(correction.energy_j(drv, b - a), ref))
            row[str(length)] = {
                "naive": _stats(naive),
                "naive_signed_median": statistics.median(naive),
                "corrected": _stats(fixed) if fixed else None,
                "corrected_signed_median": statistics.median(fixed) if fixed else None,
            }
        out[field] = row
    return {"correction": None if correction is None else correction.family, "fields": out}


# -- fitting the sensor model --------------------------------------------------------------------


def fit_sensor(rec: Recording, field: str) -> dict[str, float]:
    """Least-squares fit of the part-time sensor model to one recorded field: the readings
    published every ``update_s`` (phase), each the mean of the reference over ``window_s``
    ending ``delay_s`` before publication, times ``gain`` plus ``offset_w``. A coarse grid, then
    a finer one around the best point (numpy)."""
    import numpy as np

    rt = np.asarray(rec.reference.t)
    rw = np.asarray(rec.reference.w)
    cum = np.concatenate([[0.0], np.cumsum((rw[1:] + rw[:-1]) / 2 * np.diff(rt))])
    series = rec.driver[field]
    t = np.asarray(series.t)
    v = np.asarray(series.w)
    keep = (t > rec.start_s + 0.3) & (t < rec.end_s)
    t, v = t[keep], v[keep]

    def score(
        update: float, window: float, delay: float, phase: float
    ) -> tuple[float, float, float]:
        k = np.floor((t - phase) / update)
        end = phase + k * update - delay
        mean = (np.interp(end, rt, cum) - np.interp(end - window, rt, cum)) / window
        a = np.vstack([mean, np.ones_like(mean)]).T
        (gain, offset), *_ = np.linalg.lstsq(a, v, rcond=None)
        return float(np.mean((gain * mean + offset - v) ** 2)), float(gain), float(offset)

    best = (math.inf, 0.1, 0.1, 0.0, 0.0, 1.0, 0.0)
    for update in np.arange(0.098, 0.106, 0.0002):
        for window in (0.025, 0.05, 0.1):
            window = min(window, update)
            for phase in np.arange(0.0, update, 0.004):
                e, g, o = score(update, window, 0.0, phase)
                if e < best[0]:
                    best = (e, update, window, 0.0, phase, g, o)
    _, update, window, _, phase, _, _ = best
    for u in np.arange(update - 0.0003, update + 0.0003, 0.00002):
        for w in np.arange(0.005, u + 1e-9, 0.0025):
            for ph in np.arange(phase - 0.006, phase + 0.006, 0.001):
                e, g, o = score(u, w, 0.0, ph)
                if e < best[0]:
                    best = (e, u, w, 0.0, ph, g, o)
    _, update, window, _, phase, _, _ = best
    for d in np.arange(0.0, 0.15, 0.002):
        for ph in np.arange(phase - 0.01, phase + 0.15, 0.002):
            e, g, o = score(update, window, d, ph)
            if e < best[0]:
                best = (e, update, window, d, ph, g, o)
    e, update, window, delay, _, gain, offset = best
    return {
        "rmse_w": math.sqrt(e),
        "update_ms": 1000 * update,
        "window_ms": 1000 * window,
        "delay_ms": 1000 * delay,
        "gain": gain,
        "offset_w": offset,
    }


# -- report --------------------------------------------------------------------------------------


def run(quick: bool = False, fit: bool = False, root: str | None = None) -> dict[str, Any]:
    random.seed(1)  # the simulated counters' random phases: the same figures every run
    paths = find_recordings(root)
    results: dict[str, Any] = {"recordings": {}}
    for path in paths:
        rec = load_recording(path)
        t0 = time.perf_counter()
        entry: dict[str, Any] = {
            "fields": list(rec.fields),
            "span_s": [rec.start_s, rec.end_s],
            "reference_j": rec.reference_energy_j(rec.reference_start_s, rec.reference_end_s),
            "driver_j": {f: rec.driver_energy_j(f, rec.start_s, rec.end_s) for f in rec.fields},
            "reference_overlap_j": rec.reference_energy_j(rec.start_s, rec.end_s),
            "driver_vs_reference": driver_vs_reference(rec),
            "methods": {},
        }
        methods = (
            list(METHODS) if not quick else ["meter sampled 10 Hz", "meter counter (sensor model)"]
        )
        for method in methods:
            entry["methods"][method] = evaluate(rec, method)
        if fit:
            entry["fit"] = {f: fit_sensor(rec, f) for f in rec.fields}
            entry["average_rms_w"] = average_rms_w(rec)
        entry["wall_s"] = time.perf_counter() - t0
        results["recordings"][rec.name] = entry
        print(f"{rec.name}: {entry['wall_s']:.1f} s", file=sys.stderr)
    return results


def _f(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _cell(s: dict[str, float] | None) -> str:
    if not s or not s.get("n"):
        return "–"
    return f"{_f(s['median'])} / {_f(s['p90'])} / {_f(s['max'])}"


def render(results: dict[str, Any]) -> str:
    recs = results["recordings"]
    lines = [
        "<!-- traces:begin -->",
        "## Against an external power meter",
        "",
        "Generated by `python benchmarks/bench_traces.py --into BENCHMARKS.md --fit` on the "
        f"{len(recs)} recordings in `../shared/data/gpu-power-traces` (Yang et al., SC'24, MIT: "
        "a ~4.8 kHz external meter on the card's cables and slot, recorded beside nvidia-smi's "
        "readings). Replayed through meter's real device code, ledger, sampler and windows on a "
        "fake clock (`meter.testing.replay`); every meter figure here is labelled `simulated`. "
        "Errors are |error| in %, as median / p90 / max over the windows: windows of 0.1, 0.5, "
        "1 and 5 s tiled back to back at 12 phases from 1 s into the recording (so some "
        "straddle each load step), and the whole recording from 1 s in. **Reference**: the "
        "external meter; **driver**: the integral of what the driver "
        "published in the field the method reads (for the counter rows, what the modelled "
        "counter published): the error the method adds of its own.",
        "",
        "What the recordings cannot show: **no energy counter was recorded** (nvidia-smi was "
        "polled for power only), so the counter rows run on the sensor model "
        "(`meter.testing.sensor`), which says nothing about what a real board's counter does; "
        "and no recording is of an H100.",
        "",
    ]
    if not recs:
        lines += [
            "No recordings were found (`../shared/data/gpu-power-traces`).",
            "<!-- traces:end -->",
        ]
        return "\n".join(lines)
    lines += ["### Decoding and the driver's own error", ""]
    rows = []
    for name, e in recs.items():
        dvr = e["driver_vs_reference"]
        for field, row in dvr["fields"].items():
            one, five, whole = row["1.0"], row["5.0"], row["whole"]
            corr = (
                f"{_f(whole['corrected_signed_median'], 1)} % ({dvr['correction']})"
                if whole["corrected"]
                else "no published fit"
            )
            rows.append(
                [
                    name,
                    f"`{field}`",
                    f"{e['reference_overlap_j']:.0f} J vs {e['driver_j'][field]:.0f} J",
                    _cell(one["naive"]),
                    _cell(five["naive"]),
                    f"{_f(whole['naive_signed_median'], 1)} %",
                    corr,
                ]
            )
    lines += _table(
        [
            "recording",
            "field",
            "whole overlap: reference vs driver",
            "1 s windows",
            "5 s windows",
            "whole, signed",
            "whole, gain/offset undone",
        ],
        rows,
    )
    lines += [
        "",
        "The paper's headline, where these recordings allow it: on the A100 square wave "
        "(50/50 at ~9.6 Hz, a load the 25 ms-in-100 ms sensor aliases) the driver's readings are "
        "off the external meter by the 1 s-window figures above, while over 5 s and the whole "
        "recording the aliasing averages out, which is what the paper's repeated, phase-shifted "
        "runs achieve; on the step loads the remaining -5 % is the sensor's gain and offset, "
        "which the published per-family fit undoes (last column). Delay: fitted below, the "
        "readings need none beyond waiting for the next publication, so no delay shift is "
        "offered.",
        "",
        "### Summary: windows of 1 s and longer",
        "",
        "|error| %, median / p90 / max. *Adds*: against what the driver published (the "
        "method's own error); *total*: against the reference (external meter).",
        "",
    ]
    rows = []
    for name, e in recs.items():
        m = e["methods"]
        row = [name]
        for method in ("meter sampled 10 Hz", "meter counter (sensor model)"):
            res = m.get(method)
            for key in ("1.0", "5.0"):
                row.append(_cell(res[key]["driver"]) if res else "–")
        for method, key in (
            ("meter sampled 10 Hz", "1.0"),
            ("meter 10 Hz + correction", "1.0"),
            ("CodeCarbon-like (15 s)", "1.0"),
            ("Zeus-like (100 ms polls)", "1.0"),
        ):
            res = m.get(method)
            row.append(_cell(res[key]["reference"]) if res else "–")
        rows.append(row)
    lines += _table(
        [
            "recording",
            "meter 10 Hz adds, 1 s",
            "meter 10 Hz adds, 5 s",
            "counter (model) adds, 1 s",
            "counter (model) adds, 5 s",
            "meter 10 Hz total, 1 s",
            "+ correction total, 1 s",
            "CodeCarbon-like total, 1 s",
            "Zeus-like total, 1 s",
        ],
        rows,
    )
    lines += ["", "### Every method and window length", ""]
    for name, e in recs.items():
        keys = [*(str(w) for w in WINDOWS_S), "whole"]
        header = ["method", *(f"{w:g} s" for w in WINDOWS_S), "whole"]
        for against, label in (
            ("reference", "against the reference (external meter)"),
            ("driver", "against what the driver published"),
        ):
            lines += [
                f"**{name}**, {label} (meter reads `{_field_of(e)}`; |error| % median / p90 / max)",
                "",
            ]
            rows = [
                [method] + [_cell(res[k][against]) for k in keys]
                for method, res in e["methods"].items()
            ]
            lines += _table(header, rows)
            lines.append("")
    lines += _straddle_note(recs)
    if any("fit" in e for e in recs.values()):
        lines += ["### The sensor model fitted to each recording", ""]
        rows = []
        for name, e in recs.items():
            for field, f in e.get("fit", {}).items():
                rows.append(
                    [
                        name,
                        f"`{field}`",
                        _f(f["update_ms"]),
                        _f(f["window_ms"], 1),
                        _f(f["delay_ms"], 0),
                        _f(f["gain"], 3),
                        f"{f['offset_w']:+.2f}",
                        _f(f["rmse_w"]),
                    ]
                )
        lines += _table(
            [
                "recording",
                "field",
                "update ms",
                "window ms",
                "delay ms",
                "gain",
                "offset W",
                "RMS W",
            ],
            rows,
        )
        lines += [
            "",
            "A 1 s `power.draw` (RTX 3090, A5000) is not a boxcar of one period, so its row fits "
            "badly (large RMS); it is the mean of the last second of instantaneous readings "
            f"({_average_note(recs)}), which is how `meter.testing.sensor` models it.",
            "",
        ]
    lines.append("<!-- traces:end -->")
    return "\n".join(lines)


def _average_note(recs: dict[str, Any]) -> str:
    parts = [
        f"{name} {rms:.1f} W RMS"
        for name, e in recs.items()
        for rms in [e.get("average_rms_w")]
        if rms
    ]
    return "; ".join(parts) or "not measured"


def average_rms_w(rec: Recording) -> float | None:
    """RMS difference between the recorded ``power.draw`` and the mean of the last second of
    ``power.draw.instant`` readings, where the file has both and they differ (a 1 s field)."""
    if not {"power.draw", "power.draw.instant"} <= set(rec.fields):
        return None
    series = rec.driver["power.draw"]
    rows = [
        (t, w) for t, w in zip(series.t, series.w, strict=True) if rec.start_s + 1.0 < t < rec.end_s
    ]
    if all(w == rec.driver_power_w("power.draw.instant", t) for t, w in rows):
        return None  # the same field (A100: power.draw is the instantaneous reading)
    squares = [(w - rec.driver_energy_j("power.draw.instant", t - 1.0, t)) ** 2 for t, w in rows]
    return math.sqrt(sum(squares) / len(squares))


def _field_of(e: dict[str, Any]) -> str:
    return "power.draw.instant" if "power.draw.instant" in e["fields"] else "power.draw"


def _straddle_note(recs: dict[str, Any]) -> list[str]:
    worst = []
    for name, e in recs.items():
        s = e["methods"].get("meter sampled 10 Hz", {}).get("1.0", {}).get("straddling_driver")
        if s and s.get("n"):
            worst.append(f"{name} {_f(s['median'])} / {_f(s['max'])}")
    if not worst:
        return []
    return [
        "Where meter's own error comes from: 1 s windows that see a load switch (contain one, "
        f"or start within {SETTLE_S:g} s after one), meter sampled 10 Hz against the driver "
        "(median / max): " + "; ".join(worst) + ". A 10 Hz reader "
        "cannot tell when within its 100 ms the reading changed; the boundary read halves that "
        "and the sampler's spread ticks keep it from aliasing with the driver's own ~100 ms "
        "updates (meter/sampler.py, `TICK_SPREAD`).",
        "",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def write_into(path: Path, section: str) -> None:
    """Replace the ``traces`` block of ``path``, or put it before the side-by-side comparison
    (or "## Real GPU", or at the end)."""
    text = path.read_text() if path.exists() else ""
    begin, end = "<!-- traces:begin -->", "<!-- traces:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        for anchor in ("<!-- compare:begin", "\n## Real GPU\n"):
            if anchor in text:
                head, tail = text.split(anchor, 1)
                text = head.rstrip("\n") + "\n\n" + section + "\n\n" + anchor.lstrip("\n") + tail
                break
        else:
            text = text + "\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--into", help="write the section into this Markdown file")
    parser.add_argument("--fit", action="store_true", help="also fit the sensor model (numpy)")
    parser.add_argument("--quick", action="store_true", help="two methods only")
    parser.add_argument(
        "--root", help="recordings folder (default ../shared/data/gpu-power-traces)"
    )
    args = parser.parse_args(argv)
    results = run(args.quick, args.fit, args.root)
    if not results["recordings"]:
        print("no recordings found; nothing to do", file=sys.stderr)
        return 1
    section = render(results)
    if args.into:
        write_into(Path(args.into), section)
        print(f"wrote the section into {args.into}", file=sys.stderr)
    else:
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reading a `meter run --output` JSONL file and summarising its runs (pure Python).

The file holds, for each run, zero or more ``"kind": "window"`` records (the windows the command
opened itself with `meter.measure`) and then the ``"kind": "run"`` record. A window names its
run by ``run_id``; records written before ``run_id`` existed have none, and their windows go to
the next run record in the file. Older run records have no ``timeline``: they are reported by
their totals only.

>>> runs = read_runs("runs.jsonl")             # doctest: +SKIP
>>> summary = summarise(select(runs, "all"))   # doctest: +SKIP
>>> summary["runs"][0]["energy_j"]             # doctest: +SKIP
27000.0
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meter.errors import MeterError

#: Figures that come from a model, not a sensor: never shown as measurements.
ESTIMATE_METHODS = frozenset({"estimated", "simulated"})
_METHOD_NOTES = {
    "counter": "measured: hardware energy counter",
    "sampled": "measured: power samples integrated",
    "estimated": "ESTIMATE: no sensor, a model",
    "simulated": "SIMULATED: not a real device",
}
#: More windows of one name than this in one run are merged into fewer shaded spans.
MAX_SPANS = 200


class ReportError(MeterError):
    """The report cannot be made from this input (missing file, not JSONL, no run, bad --run)."""


def is_estimate(method: str | None) -> bool:
    """True for figures that are not measurements (``estimated``, ``simulated``, unknown)."""
    return method not in ("counter", "sampled")


def method_note(method: str | None) -> str:
    """How a figure was obtained, in words: ``simulated`` -> ``SIMULATED: not a real device``."""
    return _METHOD_NOTES.get(method or "", f"ESTIMATE: unknown method {method!r}")


@dataclass(frozen=True)
class Run:
    """One `meter run`: its run record and the window records of its command."""

    index: int  # position among the file's runs, from 0
    record: Mapping[str, Any]
    windows: tuple[Mapping[str, Any], ...]

    @property
    def name(self) -> str:
        return str(self.record.get("name") or "run")

    @property
    def run_id(self) -> str | None:
        rid = self.record.get("run_id")
        return str(rid) if rid else None

    @property
    def start_time(self) -> float:
        return _num(self.record.get("start_time")) or 0.0

    @property
    def timeline(self) -> Mapping[str, Any] | None:
        t = self.record.get("timeline")
        return t if isinstance(t, Mapping) and isinstance(t.get("devices"), Mapping) else None


def _num(value: Any) -> float | None:
    """A finite float, or None (JSON null, NaN written as null, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_runs(path: str | os.PathLike[str]) -> list[Run]:
    """The runs of a JSONL file written by ``meter run --output``, in file order.

    Raises `ReportError` with a one-line reason when the file is missing, is not JSON Lines or
    holds no run record. A line torn by a crash (only ever the last of a run) is skipped.
    """
    p = Path(path)
    if not p.exists():
        raise ReportError(f"{p}: no such file; give the --output file of `meter run`")
    if p.is_dir():
        raise ReportError(f"{p} is a folder; give the --output file of `meter run`")
    records: list[Mapping[str, Any]] = []
    bad = 0
    try:
        with open(p, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(record, dict):
                    records.append(record)
                else:
                    bad += 1
    except UnicodeDecodeError:
        raise ReportError(f"{p} is not a JSONL file (not UTF-8 text)") from None
    except OSError as exc:
        raise ReportError(f"{p}: cannot read it: {exc.strerror or exc}") from None
    if not records:
        what = f"none of its {bad} lines is a JSON object" if bad else "it is empty"
        raise ReportError(f"{p} is not a JSONL file of meter records: {what}")
    runs = group_runs(records)
    if not runs:
        raise ReportError(
            f'{p} has no run record ("kind": "run"): write one with `meter run --output {p} -- CMD`'
        )
    return runs


def group_runs(records: Iterable[Mapping[str, Any]]) -> list[Run]:
    """Pair each run record with its windows: by ``run_id``, else the windows just before it."""
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    pending: list[Mapping[str, Any]] = []  # windows without run_id, waiting for their run
    raw: list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = []
    for r in records:
        kind = r.get("kind")
        if kind == "window":
            rid = r.get("run_id")
            if rid:
                by_id.setdefault(str(rid), []).append(r)
            else:
                pending.append(r)
        elif kind == "run":
            raw.append((r, pending))
            pending = []
    runs = []
    for i, (record, unnamed) in enumerate(raw):
        rid = record.get("run_id")
        windows = [*unnamed, *(by_id.get(str(rid), []) if rid else [])]
        windows.sort(key=lambda w: _num(w.get("start_time")) or 0.0)
        runs.append(Run(i, record, tuple(windows)))
    return runs


def select(runs: Sequence[Run], which: str | None) -> list[Run]:
    """The runs ``--run`` names: ``all`` (or None), an index (from 0; -1 is the last) or a name
    (every run of that name)."""
    if which is None or which == "all":
        return list(runs)
    try:
        i = int(which)
    except ValueError:
        chosen = [r for r in runs if r.name == which]
        if not chosen:
            names = ", ".join(sorted({r.name for r in runs}))
            raise ReportError(
                f"--run {which}: no run of that name; the file has: {names} "
                f"(or give an index from 0 to {len(runs) - 1}, or all)"
            ) from None
        return chosen
    if not -len(runs) <= i < len(runs):
        raise ReportError(
            f"--run {which}: the file has {len(runs)} run(s); give an index from 0 to "
            f"{len(runs) - 1} (-1 is the last), a run name, or all"
        )
    return [runs[i]]


# -- summaries ---------------------------------------------------------------------------------


def _device_summary(d: Mapping[str, Any]) -> dict[str, Any]:
    method = d.get("method")
    return {
        "energy_j": _num(d.get("energy_j")),
        "avg_power_w": _num(d.get("avg_power_w")),
        "peak_power_w": _num(d.get("peak_power_w")),
        "method": method,
        "estimate": is_estimate(method),
        "model": d.get("model") or "",
        "approximate": bool(d.get("approximate")),
        "co2e_g": _num(d.get("co2e_g")),
        "co2e_market_g": _num(d.get("co2e_market_g")),
        "embodied_co2e_g": _num(d.get("embodied_co2e_g")),
        "faults": list(d.get("faults") or []),
    }


def _add(total: float | None, value: float | None) -> float | None:
    if value is None:
        return total
    return value if total is None else total + value


def window_totals(windows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per window name: count, energy, duration, CO2e and each device's energy and method."""
    out: dict[str, dict[str, Any]] = {}
    for w in windows:
        name = str(w.get("name") or "window")
        t = out.setdefault(
            name,
            {
                "count": 0,
                "energy_j": 0.0,
                "duration_s": 0.0,
                "co2e_g": None,
                "approximate": 0,
                "devices": {},
            },
        )
        t["count"] += 1
        t["energy_j"] += _num(w.get("energy_j")) or 0.0
        t["duration_s"] += _num(w.get("duration_s")) or 0.0
        t["co2e_g"] = _add(t["co2e_g"], _num(w.get("co2e_g")))
        t["approximate"] += bool(w.get("approximate"))
        for key, d in (w.get("devices") or {}).items():
            dev = t["devices"].setdefault(key, {"energy_j": 0.0, "method": d.get("method")})
            dev["energy_j"] += _num(d.get("energy_j")) or 0.0
    for t in out.values():
        t["mean_energy_j"] = t["energy_j"] / t["count"]
        t["mean_duration_s"] = t["duration_s"] / t["count"]
        t["methods"] = sorted({str(d["method"]) for d in t["devices"].values()})
    return out


def _timeline_summary(timeline: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if timeline is None:
        return None
    devices = {}
    n = 0
    for key, d in timeline["devices"].items():
        means = [v for v in (_num(x) for x in d.get("mean_w") or []) if v is not None]
        peaks = [v for v in (_num(x) for x in d.get("max_w") or []) if v is not None]
        n = max(n, len(d.get("mean_w") or []))
        devices[key] = {
            "method": d.get("method"),
            "kind": d.get("kind"),
            "mean_w": sum(means) / len(means) if means else None,
            "max_w": max(peaks) if peaks else None,
        }
    return {
        "t0": _num(timeline.get("t0")),
        "bucket_s": _num(timeline.get("bucket_s")),
        "buckets": n,
        "devices": devices,
    }


def summarise_run(run: Run) -> dict[str, Any]:
    """The figures of one run (what ``meter report --format json`` prints for it)."""
    r = run.record
    carbon = r.get("carbon") or {}
    devices = {k: _device_summary(d) for k, d in (r.get("devices") or {}).items()}
    return {
        "index": run.index,
        "name": run.name,
        "run_id": run.run_id,
        "command": list(r.get("command") or []),
        "exit_code": r.get("exit_code"),
        "host": r.get("host"),
        "meter_version": r.get("meter_version"),
        "start_time": _num(r.get("start_time")),
        "end_time": _num(r.get("end_time")),
        "duration_s": _num(r.get("duration_s")),
        "energy_j": _num(r.get("energy_j")),
        "avg_power_w": _num(r.get("avg_power_w")),
        "dynamic_energy_j": _num(r.get("dynamic_energy_j")),
        "co2e_g": _num(r.get("co2e_g")),
        "co2e_market_g": _num(r.get("co2e_market_g")),
        "embodied_co2e_g": _num(r.get("embodied_co2e_g")),
        "approximate": bool(r.get("approximate")),
        "estimate": any(d["estimate"] for d in devices.values()),
        "methods": sorted({str(d["method"]) for d in devices.values()}),
        "error": r.get("error"),
        "carbon": {
            "zone": carbon.get("zone"),
            "zone_from": carbon.get("zone_from"),
            "provider": carbon.get("provider") or carbon.get("source"),
            "intensity_g_per_kwh": _num(carbon.get("intensity_g_per_kwh")),
            "pue": _num(carbon.get("pue")),
            "marginal": carbon.get("marginal"),
            "market_basis": carbon.get("market_basis"),
            "fallbacks": list(carbon.get("fallbacks") or []),
        },
        "compare_zones": [dict(z) for z in r.get("compare_zones") or []],
        "devices": devices,
        "windows": window_totals(run.windows),
        "timeline": _timeline_summary(run.timeline),
    }


def summarise(runs: Sequence[Run]) -> dict[str, Any]:
    """Every run's figures, and the series across runs (by start time) that show a regression:
    energy, duration and CO2e per run, and the mean energy of each window name per run."""
    summaries = [summarise_run(r) for r in runs]
    ordered = sorted(summaries, key=lambda s: s["start_time"] or 0.0)
    names = sorted({n for s in ordered for n in s["windows"]})
    series = {
        "index": [s["index"] for s in ordered],
        "name": [s["name"] for s in ordered],
        "start_time": [s["start_time"] for s in ordered],
        "energy_j": [s["energy_j"] for s in ordered],
        "duration_s": [s["duration_s"] for s in ordered],
        "co2e_g": [s["co2e_g"] for s in ordered],
        "window_mean_energy_j": {
            n: [s["windows"][n]["mean_energy_j"] if n in s["windows"] else None for s in ordered]
            for n in names
        },
    }
    return {"runs": summaries, "series": series}


# -- window spans for the timeline ------------------------------------------------------------


@dataclass(frozen=True)
class SpanGroup:
    """The windows of one name in one run, as spans to shade (seconds from the run's start).

    ``merged`` is set when there were more than `MAX_SPANS` windows, and spans closer than
    ``gap_s`` were drawn as one."""

    name: str
    count: int
    spans: tuple[tuple[float, float], ...]
    merged: bool = False
    gap_s: float = 0.0


def _merge(spans: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a - out[-1][1] <= gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def window_spans(
    windows: Iterable[Mapping[str, Any]], origin: float, *, max_spans: int = MAX_SPANS
) -> list[SpanGroup]:
    """Group windows by name into spans relative to ``origin`` (wall epoch s), in order of first
    appearance. A name with more than ``max_spans`` windows (one per request, say) has its
    overlapping or nearby spans merged so that at most about ``max_spans`` remain."""
    by_name: dict[str, list[tuple[float, float]]] = {}
    for w in windows:
        a, b = _num(w.get("start_time")), _num(w.get("end_time"))
        if a is None or b is None:
            continue
        by_name.setdefault(str(w.get("name") or "window"), []).append((a - origin, b - origin))
    groups = []
    for name, spans in by_name.items():
        spans.sort()
        if len(spans) <= max_spans:
            groups.append(SpanGroup(name, len(spans), tuple(spans)))
            continue
        extent = max(b for _, b in spans) - spans[0][0]
        gap = 0.0
        merged = _merge(spans, gap)
        if len(merged) > max_spans:
            gap = extent / max_spans
            merged = _merge(spans, gap)
        groups.append(SpanGroup(name, len(spans), tuple(merged[:max_spans]), True, gap))
    return groups

"""Synthetic but realistic `meter run --output` records, written by the repository's JsonlWriter.

A run: two simulated GPUs (300 W and 150 W under load, a quarter of that idle) and an estimated
CPU, a few seconds of setup, then ``epochs`` 'epoch' windows each followed by a short
'validation' window, on 1 s timeline buckets. Every total (device, window, run) is the sum of
the buckets it covers, so tests can check the report's figures against the records exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meter.exporters.jsonl import JsonlWriter

from meter.measurement import DeviceMeasurement, Measurement

J_PER_KWH = 3.6e6
INTENSITY = 380.0  # g/kWh, zone DE
PUE = 1.1
T_BASE = 1_780_000_000.0  # a wall epoch in 2026


@dataclass
class Written:
    """What `write_run` wrote: the run record and its windows (as dicts)."""

    run: dict[str, Any]
    windows: list[dict[str, Any]] = field(default_factory=list)


def _carbon(energy_j: float) -> dict[str, Any]:
    return {
        "zone": "DE",
        "zone_from": "METER_ZONE",
        "provider": "embedded",
        "intensity_g_per_kwh": INTENSITY,
        "pue": PUE,
        "marginal": False,
        "fallbacks": [],
        "market_basis": "renewable share 0.5",
    }


def _measurement(
    name: str,
    start: float,
    power: dict[str, list[float]],
    methods: dict[str, str],
    a: int,
    b: int,
    extra: dict[str, Any],
) -> Measurement:
    """The window of buckets [a, b) (1 s each) from ``start``."""
    devices = {}
    total = 0.0
    for key, watts in power.items():
        part = watts[a:b]
        energy = sum(part)
        total += energy
        devices[key] = DeviceMeasurement(
            energy_j=energy,
            avg_power_w=energy / (b - a),
            peak_power_w=max(part),
            method=methods[key],
            model="Simulated GPU" if key.startswith("gpu") else "CPU estimate",
            co2e_g=energy / J_PER_KWH * INTENSITY * PUE,
            co2e_market_g=energy / J_PER_KWH * INTENSITY * PUE * 0.5,
            embodied_co2e_g=0.0008 * (b - a),
        )
    co2e = total / J_PER_KWH * INTENSITY * PUE
    return Measurement(
        name=name,
        start_time=start + a,
        end_time=start + b,
        duration_s=float(b - a),
        energy_j=total,
        devices=devices,
        co2e_g=co2e,
        co2e_market_g=co2e * 0.5,
        embodied_co2e_g=0.0008 * (b - a) * len(devices),
        carbon=_carbon(total),
        extra=extra,
    )


def write_run(
    writer: JsonlWriter,
    *,
    start: float = T_BASE,
    run_id: str = "0" * 31 + "1",
    name: str = "train_cpu.py",
    gpus: tuple[float, ...] = (300.0, 150.0),
    epochs: int = 4,
    epoch_s: int = 10,
    scale: float = 1.0,
    seed: int = 0,
    timeline: bool = True,
    compare: bool = True,
) -> Written:
    """Write one run (its windows, then the run record) and return what was written."""
    rng = random.Random(seed)
    setup, val = 3, 2
    n = setup + epochs * (epoch_s + val) + 1
    busy = [False] * n
    for e in range(epochs):
        a = setup + e * (epoch_s + val)
        for i in range(a, a + epoch_s):
            busy[i] = True
    mean: dict[str, list[float]] = {}
    low: dict[str, list[float]] = {}
    high: dict[str, list[float]] = {}
    methods: dict[str, str] = {}
    for g, p in enumerate(gpus):
        key = f"gpu:{g}"
        methods[key] = "simulated"
        mean[key] = [
            round(p * scale * rng.uniform(0.9, 1.0) if b else p * 0.25 * rng.uniform(0.95, 1.05), 2)
            for b in busy
        ]
    methods["cpu:0"] = "estimated"
    mean["cpu:0"] = [round(14.0 * (2.0 if b else 1.0), 2) for b in busy]
    for key, m in mean.items():
        low[key] = [round(v * rng.uniform(0.85, 0.97), 2) for v in m]
        high[key] = [round(v * rng.uniform(1.03, 1.12), 2) for v in m]
    out = Written(run={})
    for e in range(epochs):
        a = setup + e * (epoch_s + val)
        for wname, wa, wb in (
            ("epoch", a, a + epoch_s),
            ("validation", a + epoch_s, a + epoch_s + val),
        ):
            rec = _measurement(
                wname, start, mean, methods, wa, wb, {"kind": "window", "run_id": run_id}
            ).to_dict()
            writer.write(rec)
            out.windows.append(rec)
    extra: dict[str, Any] = {
        "kind": "run",
        "command": ["python", "examples/train_cpu.py"],
        "exit_code": 0,
        "host": "node-7",
        "interval_s": 0.1,
        "meter_version": "0.1.0",
        "run_id": run_id,
    }
    m = _measurement(name, start, mean, methods, 0, n, extra)
    rec = m.to_dict()
    if compare:
        rec["compare_zones"] = [
            {
                "zone": z,
                "name": zn,
                "g_per_kwh": g,
                "co2e_g": m.energy_j / J_PER_KWH * g * PUE,
                "source": "Ember 2023",
            }
            for z, zn, g in (("FR", "France", 56.0), ("PL", "Poland", 662.0))
        ]
    if timeline:
        rec["timeline"] = {
            "t0": start,
            "bucket_s": 1.0,
            "devices": {
                key: {
                    "method": methods[key],
                    "kind": key.split(":")[0],
                    "mean_w": mean[key],
                    "min_w": low[key],
                    "max_w": high[key],
                }
                for key in mean
            },
        }
    writer.write(rec)
    out.run = rec
    return out


def write_file(path: Path, runs: int = 1, **kw: Any) -> list[Written]:
    """``runs`` runs one hour apart; the last one's epochs draw 30 % more power (a regression)."""
    writer = JsonlWriter(path, fsync=False)
    out = []
    for i in range(runs):
        scale = 1.3 if runs > 1 and i == runs - 1 else 1.0
        out.append(
            write_run(
                writer,
                start=T_BASE + 3600.0 * i,
                run_id=f"{i + 1:032x}",
                scale=scale,
                seed=i,
                **kw,
            )
        )
    return out

"""Shared by the trace tests: where the recordings are, and a writer of synthetic ones."""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from meter.testing.traces import TICKS_PER_MS, default_traces_dir, find_recordings

TRACES = default_traces_dir()
RECORDINGS = find_recordings(TRACES)
needs_traces = pytest.mark.skipif(
    not RECORDINGS,
    reason=f"no GPU power recordings at {TRACES} (../shared/data/gpu-power-traces beside the "
    "repository, or METER_GPU_TRACES): the replay tests need them",
)


def recording(name: str) -> Path:
    path = TRACES / name
    if not (path / "PMD_data.bin").is_file():
        pytest.skip(f"recording {name} is not in {TRACES}")
    return path


def encode(value: int) -> int:
    """A raw PMD word whose decoded value is ``value`` (0..2047): (int16(v) >> 4) & 0xFFF."""
    assert 0 <= value < 0x800
    return value << 4


def write_recording(
    folder: Path,
    *,
    pairs: Callable[[float], Sequence[tuple[int, int]]],
    seconds: float = 3.0,
    rate_hz: float = 1000.0,
    readings: Callable[[float], dict[str, float]],
    poll_s: float = 0.01,
    hours_ahead: int = 1,
    tick_start: int = 60_000,
    switches: Sequence[float] = (),
) -> Path:
    """A recording folder in the PMD + nvidia-smi format: ``pairs(t)`` gives the four raw
    (voltage, current) values of the meter at ``t``; ``readings(t)`` the nvidia-smi fields at
    ``t``. The CSV is written in local time ``hours_ahead`` of UTC; the tick counter starts at
    ``tick_start`` so that it wraps."""
    folder.mkdir(parents=True, exist_ok=True)
    start_us = 1_700_000_000_000_000
    (folder / "PMD_start_ts.txt").write_text(f"{start_us}\n")
    data = bytearray()
    n = int(seconds * rate_hz)
    ticks_per_sample = TICKS_PER_MS * 1000.0 / rate_hz
    for i in range(n):
        t = i / rate_hz
        tick = (tick_start + round(i * ticks_per_sample)) % 65536
        words = [encode(v) for pair in pairs(t) for v in pair]
        data += struct.pack("<9H", tick, *words)
    (folder / "PMD_data.bin").write_bytes(bytes(data))
    # The meter's clock starts 50 ms before PMD_start_ts (the authors' correction); the CSV
    # starts 0.2 s before the meter.
    zero = (start_us - 50_000) / 1e6 - 0.2
    fields = list(readings(0.0))
    lines = ["timestamp, utilization.gpu [%], " + ", ".join(f"{f} [W]" for f in fields)]
    t = 0.0
    while t < seconds + 0.5:
        local = datetime.datetime.fromtimestamp(
            zero + t, datetime.timezone.utc
        ) + datetime.timedelta(hours=hours_ahead)
        stamp = local.strftime("%Y/%m/%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"
        values = readings(t)
        lines.append(f"{stamp}, 0, " + ", ".join(f"{values[f]:.2f}" for f in fields))
        t += poll_s
    (folder / "gpudata.csv").write_text("\n".join(lines) + "\n")
    stamps = [round((zero + s) * 1e6) for s in switches for _ in range(2)]
    (folder / "timestamps.csv").write_text("timestamp\n" + "".join(f"{s}\n" for s in stamps))
    return folder

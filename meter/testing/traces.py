"""Real GPU power recorded beside an external reference meter: read one recording folder.

The recordings (Yang et al., SC'24, arXiv 2312.02741; MIT; in ``../shared/data/gpu-power-traces``
of this repository, never shipped in the package) hold, for one GPU and one experiment:

* ``PMD_data.bin``: an ElmorLabs PMD meter on the card's power cables and PCIe slot, ~4.8 kHz:
  the *reference*, the board's true power;
* ``PMD_start_ts.txt``: the meter's start, Unix epoch microseconds;
* ``gpudata.csv``: ``nvidia-smi --query-gpu`` polled every ~7-15 ms: what the driver published
  (``power.draw`` and, where the driver had them, ``power.draw.instant`` and
  ``power.draw.average``), with local timestamps without a zone;
* ``timestamps.csv`` (optional): Unix epoch microseconds at which the load was switched.

`load_recording` puts all of it on one clock whose zero is the first row of ``gpudata.csv``.

Decoding ``PMD_data.bin`` follows the authors' ``_convert_pmd_data`` (GPU_Power_Benchmark,
commit 4b5c944): 18-byte little-endian records of nine uint16. Word 0 is a 16-bit tick counter
(it wraps at 65536). Words 1-8 are four (voltage, current) pairs; a raw word ``v`` becomes
``(int16(v) >> 4) & 0x0FFF``, or 0 when bit 11 is set. Volts are ``v x 0.007568``, except the
third pair (words 5 and 6, the PCIe slot), where they are ``v x 0.0075``; amps are
``v x 0.0488``; board power is the sum of the four products. Two details differ from the data
README and were checked against the data:

* the README gives 0.0075 to the *fourth* pair; the authors' code gives it to the third, and
  only the third reproduces the README's own figures (A100 step load: 1710 J; RTX 3090: 3709 J);
* the README says 2934.5 ticks per ms, the authors' code divides by 2933.5. Fitting the PMD's
  power edges against ``timestamps.csv`` over the A100 square wave's 76 rising edges gives
  2933.2 ticks per ms, so 2933.5 is used (the two differ by 0.03 %, 4 ms over 14 s).

The meter's start is ``PMD_start_ts - 50 ms``, as the authors do: with it, the PMD's power
edges fall within a millisecond of the recorded load switches. ``gpudata.csv`` timestamps are
local time: the offset to the meter's epoch is the whole number of hours nearest to the
difference of the two starts.

    >>> rec = load_recording(find_recordings()[0])  # doctest: +SKIP
    >>> rec.reference_energy_j(2, 3), rec.driver_energy_j("power.draw", 2, 3)  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import csv
import datetime
import functools
import math
import os
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from meter import config
from meter.errors import ConfigError

__all__ = [
    "DRIVER_FIELDS",
    "TICKS_PER_MS",
    "Recording",
    "Series",
    "TracePower",
    "default_traces_dir",
    "find_recordings",
    "load_recording",
]

#: PMD tick counter rate (the authors' constant; 2933.2 fitted on the A100 square wave).
TICKS_PER_MS = 2933.5
#: The authors subtract this from ``PMD_start_ts.txt`` (the meter's start-up latency).
PMD_START_SHIFT_US = 50_000
_RECORD = struct.Struct("<9H")
_VOLTS = (0.007568, 0.007568, 0.0075, 0.007568)  # per (V, I) pair; pair 2 is the PCIe slot
_AMPS = 0.0488
#: The nvidia-smi power fields a recording may have, in the order meter prefers them.
DRIVER_FIELDS = ("power.draw.instant", "power.draw", "power.draw.average")
#: Where the repository keeps the recordings, relative to its top level (never packaged).
_SHARED = Path("..") / "shared" / "data" / "gpu-power-traces"
TRACES_ENV = "METER_GPU_TRACES"


def default_traces_dir() -> Path:
    """Where the recordings are: ``$METER_GPU_TRACES``, else ``../shared/data/gpu-power-traces``
    beside this checkout (``<repo>/../shared/...``). The folder may not exist."""
    env = config.raw(TRACES_ENV)
    if env is not None:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return (repo / _SHARED).resolve()


def find_recordings(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every recording folder under ``root`` (default `default_traces_dir`), sorted: the
    folders that hold both ``PMD_data.bin`` and ``gpudata.csv``. Empty when none."""
    base = Path(root) if root is not None else default_traces_dir()
    if not base.is_dir():
        return []
    return sorted(
        p.parent for p in base.rglob("PMD_data.bin") if (p.parent / "gpudata.csv").is_file()
    )


class TraceError(ConfigError):
    """A recording folder that cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class Series:
    """Times (seconds on the recording's clock) and watts, in time order."""

    t: array
    w: array

    def __len__(self) -> int:
        return len(self.t)


def _cumulative_trapezoid(t: array, w: array) -> array:
    out = array("d", [0.0])
    total = 0.0
    for i in range(1, len(t)):
        total += (w[i] + w[i - 1]) * 0.5 * (t[i] - t[i - 1])
        out.append(total)
    return out


def _cumulative_held(t: array, w: array) -> array:
    out = array("d", [0.0])
    total = 0.0
    for i in range(1, len(t)):
        total += w[i - 1] * (t[i] - t[i - 1])
        out.append(total)
    return out


class Recording:
    """One recording: the reference power and the driver's readings on one clock.

    Time zero is the first row of ``gpudata.csv``. ``reference`` is the external meter's power
    (linear between its samples); ``driver[field]`` what nvidia-smi read, held from each row to
    the next, for each field in `DRIVER_FIELDS` the file has. ``switches_s`` are the recorded
    load switches (empty without ``timestamps.csv``).
    """

    def __init__(
        self,
        path: Path,
        reference: Series,
        driver: Mapping[str, Series],
        switches_s: Sequence[float],
        *,
        hours_offset: int,
    ) -> None:
        self.path = path
        self.name = "/".join(path.parts[-2:])
        self.reference = reference
        self.driver = dict(driver)
        self.switches_s = tuple(switches_s)
        #: Hours added to ``gpudata.csv`` local times to reach the meter's epoch.
        self.hours_offset = hours_offset
        self._ref_cum = _cumulative_trapezoid(reference.t, reference.w)
        self._driver_cum = {k: _cumulative_held(s.t, s.w) for k, s in self.driver.items()}

    def __repr__(self) -> str:
        return (
            f"Recording({self.name!r}, reference {len(self.reference)} samples over "
            f"{self.reference_start_s:.2f}-{self.reference_end_s:.2f} s, driver "
            f"{', '.join(self.fields)} over 0-{self.driver_end_s:.2f} s)"
        )

    # -- spans ---------------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """The driver's power fields in this file, in `DRIVER_FIELDS` order."""
        return tuple(f for f in DRIVER_FIELDS if f in self.driver)

    @property
    def reference_start_s(self) -> float:
        return float(self.reference.t[0])

    @property
    def reference_end_s(self) -> float:
        return float(self.reference.t[-1])

    @property
    def driver_end_s(self) -> float:
        """Time of the last ``gpudata.csv`` row (the first is 0)."""
        return max(float(s.t[-1]) for s in self.driver.values())

    @property
    def start_s(self) -> float:
        """Start of the span both the reference and the driver cover."""
        return max(self.reference_start_s, 0.0)

    @property
    def end_s(self) -> float:
        """End of the span both the reference and the driver cover."""
        return min(self.reference_end_s, self.driver_end_s)

    # -- the reference -------------------------------------------------------------------

    def reference_power_w(self, t: float) -> float:
        """The external meter's watts at ``t`` (linear between samples, held outside them)."""
        ts, ws = self.reference.t, self.reference.w
        i = bisect.bisect_right(ts, t)
        if i == 0:
            return float(ws[0])
        if i >= len(ts):
            return float(ws[-1])
        t0, t1 = ts[i - 1], ts[i]
        f = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
        return float(ws[i - 1] + (ws[i] - ws[i - 1]) * f)

    def reference_cumulative_j(self, t: float) -> float:
        """Joules from the first reference sample to ``t`` (the first and last watts are held
        before and after the samples, so this is defined, and linear, everywhere)."""
        ts, ws, cum = self.reference.t, self.reference.w, self._ref_cum
        if t <= ts[0]:
            return float(ws[0] * (t - ts[0]))
        if t >= ts[-1]:
            return float(cum[-1] + ws[-1] * (t - ts[-1]))
        i = bisect.bisect_right(ts, t) - 1
        dt = t - ts[i]
        slope = (ws[i + 1] - ws[i]) / (ts[i + 1] - ts[i]) if ts[i + 1] > ts[i] else 0.0
        return float(cum[i] + dt * (ws[i] + 0.5 * slope * dt))

    def reference_energy_j(self, t0: float, t1: float) -> float:
        """Joules the external meter saw over ``[t0, t1]`` (trapezoid between its samples)."""
        return self.reference_cumulative_j(t1) - self.reference_cumulative_j(t0)

    # -- the driver ----------------------------------------------------------------------

    def _series(self, field: str) -> Series:
        series = self.driver.get(field)
        if series is None:
            raise KeyError(
                f"{self.name} has no {field!r} readings; it has {', '.join(self.fields)}"
            )
        return series

    def driver_power_w(self, field: str, t: float) -> float:
        """The ``field`` reading published at ``t``: the last row at or before ``t`` (the first
        row's value before it)."""
        s = self._series(field)
        i = bisect.bisect_right(s.t, t) - 1
        return float(s.w[max(i, 0)])

    def driver_cumulative_j(self, field: str, t: float) -> float:
        """Joules of the ``field`` readings held from row to row, from time 0 to ``t``."""
        s = self._series(field)
        cum = self._driver_cum[field]
        if t <= s.t[0]:
            return float(s.w[0] * (t - s.t[0]))
        i = bisect.bisect_right(s.t, t) - 1
        return float(cum[i] + s.w[i] * (t - s.t[i]))

    def driver_energy_j(self, field: str, t0: float, t1: float) -> float:
        """Joules of what the driver published in ``field`` over ``[t0, t1]``, each reading
        held until the next row (what a reader polling without gaps would integrate)."""
        return self.driver_cumulative_j(field, t1) - self.driver_cumulative_j(field, t0)

    def change_times_s(self, field: str) -> list[float]:
        """Times of the rows where ``field`` took a new value (when a new reading appeared)."""
        s = self._series(field)
        return [s.t[i] for i in range(1, len(s.t)) if s.w[i] != s.w[i - 1]]


# -- reading the files ----------------------------------------------------------------------------


def _decode_pmd(path: Path, ticks_per_ms: float) -> Series:
    data = path.read_bytes()
    n = len(data) // _RECORD.size
    if n < 2:
        raise TraceError(
            f"{path}: {len(data)} bytes is not a PMD recording (18-byte records, at least two)"
        )
    t = array("d")
    w = array("d")
    ticks = 0
    last = None
    scale = 1.0 / (ticks_per_ms * 1000.0)
    for record in _RECORD.iter_unpack(data[: n * _RECORD.size]):
        if last is not None:
            ticks += (record[0] - last) % 65536
        last = record[0]
        watts = 0.0
        for pair in range(4):
            volts = _pmd_value(record[1 + 2 * pair]) * _VOLTS[pair]
            amps = _pmd_value(record[2 + 2 * pair]) * _AMPS
            watts += volts * amps
        t.append(ticks * scale)
        w.append(watts)
    return Series(t, w)


def _pmd_value(raw: int) -> int:
    signed = raw - 65536 if raw >= 32768 else raw
    value = (signed >> 4) & 0x0FFF
    return 0 if value & 0x800 else value


_FIELD_NAME = {name: name for name in DRIVER_FIELDS}


def _parse_time(text: str) -> float:
    """An nvidia-smi timestamp (``2023/07/14 10:10:26.905``, local time) as if it were UTC."""
    text = text.strip()
    for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            parsed = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()
    raise ValueError(f"{text!r} is not an nvidia-smi timestamp (YYYY/MM/DD HH:MM:SS.mmm)")


def _read_gpudata(path: Path) -> tuple[list[float], dict[str, tuple[list[float], list[float]]]]:
    """Row times (epoch seconds as if UTC) and, per power field, (row times, watts) of the rows
    where the field had a number (``[N/A]`` rows are skipped for that field)."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise TraceError(f"{path}: no data rows (an nvidia-smi --query-gpu CSV with a header)")
    header = [cell.strip() for cell in rows[0]]
    if not header or not header[0].lower().startswith("timestamp"):
        raise TraceError(
            f"{path}: the first column is {header[0] if header else ''!r}, not timestamp: "
            "expected nvidia-smi --query-gpu=timestamp,...,power.draw --format=csv"
        )
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        key = name.split("[")[0].strip()
        if key in _FIELD_NAME:
            columns[key] = index
    if not columns:
        raise TraceError(
            f"{path}: no power column; expected one of {', '.join(DRIVER_FIELDS)} in the header "
            f"{', '.join(header)}"
        )
    times: list[float] = []
    fields: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in columns}
    for line, row in enumerate(rows[1:], start=2):
        try:
            t = _parse_time(row[0])
        except ValueError as error:
            raise TraceError(f"{path}, line {line}: {error}") from None
        if times and t < times[-1]:
            raise TraceError(f"{path}, line {line}: time goes back ({row[0].strip()})")
        times.append(t)
        for key, index in columns.items():
            cell = row[index].strip() if index < len(row) else ""
            try:
                watts = float(cell.split()[0]) if cell else math.nan
            except ValueError:
                continue  # [N/A], [Not Supported]: no reading in this row
            if math.isfinite(watts) and watts >= 0:
                fields[key][0].append(t)
                fields[key][1].append(watts)
    return times, {k: v for k, v in fields.items() if v[0]}


def _read_switches(path: Path) -> list[float]:
    if not path.is_file():
        return []
    out: list[float] = []
    with path.open() as f:
        for line in f:
            text = line.strip()
            if text and text[0].isdigit():
                us = int(text.split(",")[0])
                if not out or us / 1e6 != out[-1]:
                    out.append(us / 1e6)
    return out


@functools.lru_cache(maxsize=16)
def _load(path: Path, ticks_per_ms: float) -> Recording:
    for name in ("PMD_data.bin", "PMD_start_ts.txt", "gpudata.csv"):
        if not (path / name).is_file():
            raise TraceError(
                f"{path} is not a GPU power recording: {name} is missing (a recording folder "
                "holds PMD_data.bin, PMD_start_ts.txt, gpudata.csv and optionally "
                "timestamps.csv; see ../shared/data/gpu-power-traces/README.md)"
            )
    try:
        start_us = int((path / "PMD_start_ts.txt").read_text().split()[0])
    except (ValueError, IndexError):
        raise TraceError(
            f"{path / 'PMD_start_ts.txt'}: expected the meter's start as integer Unix microseconds"
        ) from None
    pmd_start = (start_us - PMD_START_SHIFT_US) / 1e6
    reference = _decode_pmd(path / "PMD_data.bin", ticks_per_ms)
    times, fields = _read_gpudata(path / "gpudata.csv")
    if not fields:
        raise TraceError(f"{path / 'gpudata.csv'}: no row has a power reading")
    # The CSV is local time: the offset to the meter's (UTC) epoch is whole hours.
    hours = round((times[0] - pmd_start) / 3600.0)
    zero = times[0] - 3600.0 * hours  # time zero on the epoch clock
    ref = Series(array("d", (t + pmd_start - zero for t in reference.t)), reference.w)
    driver = {
        key: Series(array("d", (t - times[0] for t in ts)), array("d", ws))
        for key, (ts, ws) in fields.items()
    }
    switches = [s - zero for s in _read_switches(path / "timestamps.csv")]
    if ref.t[-1] <= 0 or ref.t[0] >= max(s.t[-1] for s in driver.values()):
        raise TraceError(
            f"{path}: the reference meter's samples ({ref.t[0]:.1f}..{ref.t[-1]:.1f} s) and the "
            "driver's rows do not overlap in time; check PMD_start_ts.txt"
        )
    return Recording(path, ref, driver, switches, hours_offset=-hours)


def load_recording(
    path: str | os.PathLike[str], *, ticks_per_ms: float = TICKS_PER_MS
) -> Recording:
    """Read one recording folder (cached per path). `TraceError` (a `ConfigError`) says what is
    wrong with a folder that is not a readable recording."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise TraceError(
            f"{p} is not a folder: give a recording folder such as "
            f"{default_traces_dir() / 'transient' / 'A100'}"
        )
    return _load(p.resolve(), float(ticks_per_ms))


class TracePower:
    """A recording's reference power as a board's true power, for `SimulatedGPU`: replay time
    ``t`` (seconds since the replay started) is the recording's time ``t``, looping every
    ``loop_s`` seconds (the end of the span both the reference and the driver cover). Before the
    reference's first sample its first value is held.

        >>> gpu = SimulatedGPU(TracePower(load_recording(path)))    # doctest: +SKIP
    """

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.name = recording.name
        self.loop_s = recording.end_s
        self._base = recording.reference_cumulative_j(0.0)
        self._per_loop = recording.reference_cumulative_j(self.loop_s) - self._base

    def __repr__(self) -> str:
        return f"TracePower({self.name!r}, loop_s={self.loop_s:.2f})"

    def power_w(self, t: float) -> float:
        return self.recording.reference_power_w(t % self.loop_s if t >= 0 else 0.0)

    def cumulative_j(self, t: float) -> float:
        """Joules from replay time 0 to ``t`` (negative before 0, at the first power)."""
        if t <= 0:
            return self.power_w(0.0) * t
        loops, within = divmod(t, self.loop_s)
        return loops * self._per_loop + self.recording.reference_cumulative_j(within) - self._base

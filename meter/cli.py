"""The ``meter`` command: ``devices``, ``run -- CMD``, ``serve``, ``zones``, ``calibrate``,
``dashboard``.

Every flag that mirrors a ``METER_*`` variable names it in ``--help``, and each command's help
ends with the variables it reads and their defaults, generated from `meter.config`. A user error
ends in one line on stderr that names the flag or variable at fault and the fix, never in a
traceback (``-v`` adds the traceback of an unexpected OS error).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, cast

from meter import __version__, _child, config, idle
from meter.core import Meter, check_interval, options_from_env, report_command
from meter.errors import ConfigError, MeterError
from meter.measurement import Measurement
from meter.timeline import Timeline

if TYPE_CHECKING:
    from meter.carbon.accounting import ZonePrice
    from meter.exporters.jsonl import JsonlWriter

log = logging.getLogger("meter")


def _err(msg: str) -> None:
    print(f"meter: {msg}", file=sys.stderr)


# -- units people read -----------------------------------------------------------------------

J_PER_WH = 3600.0


def _significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, never in exponent form.

    >>> _significant(0.000123456), _significant(12.3456), _significant(123456.7)
    ('0.000123', '12.3', '123457')
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    places = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:.{places}f}"


def _scaled(value: float, units: Sequence[tuple[float, str]]) -> str:
    """``value`` in the largest unit (factor, name) it reaches; the last unit below that, and
    the unit of factor 1 for zero."""
    if value == 0:
        return f"0 {next(unit for factor, unit in units if factor == 1.0)}"
    for factor, unit in units:
        if abs(value) >= factor:
            return f"{_significant(value / factor)} {unit}"
    factor, unit = units[-1]
    return f"{_significant(value / factor)} {unit}"


def format_energy(energy_j: float) -> str:
    """Joules as watt-hours, in Wh, kWh or MWh.

    >>> format_energy(300.0), format_energy(7.2e6), format_energy(0.5)
    ('0.0833 Wh', '2.00 kWh', '0.000139 Wh')
    """
    return _scaled(energy_j / J_PER_WH, ((1e6, "MWh"), (1e3, "kWh"), (1.0, "Wh")))


def format_mass(grams: float) -> str:
    """Grams of CO2e in mg, g, kg or t.

    >>> format_mass(0.000412), format_mass(12.34), format_mass(56_700.0), format_mass(2.5e6)
    ('0.412 mg', '12.3 g', '56.7 kg', '2.50 t')
    """
    return _scaled(grams, ((1e6, "t"), (1e3, "kg"), (1.0, "g"), (1e-3, "mg")))


def format_hms(seconds: float) -> str:
    """``h:mm:ss``.

    >>> format_hms(3723.4), format_hms(5.0)
    ('1:02:03', '0:00:05')
    """
    h, rest = divmod(round(max(seconds, 0.0)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_duration(seconds: float) -> str:
    """Seconds for a short run, ``h:mm:ss`` from a minute on.

    >>> format_duration(12.345), format_duration(3723.4)
    ('12.35 s', '1:02:03')
    """
    return f"{seconds:.2f} s" if seconds < 60 else format_hms(seconds)


# -- settings: flags, variables and the messages that name them ------------------------------

#: The Meter keywords that flags set, with the flag (in messages about the keyword).
_FLAGS = {
    "gpus": "--gpus",
    "gpu_correction": "--gpu-correction",
    "zone": "--zone",
    "pue": "--pue",
    "market_factor_g_per_kwh": "--market-factor",
    "renewable_share": "--renewable-share",
}


def _named(exc: ConfigError, given: Mapping[str, str]) -> ConfigError:
    """``exc`` naming what the user typed (``--pue 0.5``, ``METER_GPUS=5``) instead of the
    Meter keyword it became: ``pue=0.5 is not a PUE`` reads ``--pue 0.5 is not a PUE``."""
    key = exc.setting or ""
    said = given.get(key)
    if said is None:
        return exc
    name = re.split(r"[ =]", said, maxsplit=1)[0]
    pattern = rf"^{re.escape(key)}=(\[[^\]]*\]|'[^']*'|[^\s:;,]+)"
    text, n = re.subn(pattern, lambda _: said, str(exc))
    if n == 0:
        text = f"{said}: {text}"
    if key != "zone":  # "zone" is also a word of the messages ("unknown zone ...")
        text = re.sub(rf"(?<![\w-]){re.escape(key)}\b(?!=)", lambda _: name, text)
    return ConfigError(text, setting=name)


def _build_meter(args: argparse.Namespace, *, carbon: bool = True) -> Meter:
    """The meter the flags and ``METER_*`` variables ask for; bad values fail here, each
    message naming the flag or variable it came from."""
    opts = options_from_env()
    given: dict[str, str] = {}  # Meter keyword -> what the user typed, for messages
    if "gpus" in opts:
        given["gpus"] = f"METER_GPUS={config.raw('METER_GPUS')}"

    def flag(keyword: str, value: Any, text: Any) -> None:
        opts[keyword] = value
        given[keyword] = f"{_FLAGS[keyword]} {text}"

    if getattr(args, "interval", None) is not None:
        opts["interval_s"] = check_interval(args.interval, "--interval")
    if getattr(args, "gpus", None):
        try:
            ordinals = [int(x) for x in args.gpus.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"--gpus {config.short(args.gpus)!r} must be GPU ordinals, e.g. --gpus 0,1",
                setting="--gpus",
            ) from None
        flag("gpus", ordinals, args.gpus)
    if getattr(args, "no_cpu", False):
        opts["cpu"] = False
    if getattr(args, "gpu_correction", None):
        flag("gpu_correction", args.gpu_correction, args.gpu_correction)
    if carbon:
        for keyword, dest in (
            ("zone", "zone"),
            ("pue", "pue"),
            ("market_factor_g_per_kwh", "market_factor"),
            ("renewable_share", "renewable_share"),
        ):
            value = getattr(args, dest, None)
            if value is not None:
                flag(keyword, value, value)
        if getattr(args, "market_factor", None) is not None and args.renewable_share is not None:
            raise ConfigError(
                "give either --market-factor (a contractual emission factor) or "
                "--renewable-share (a certified renewable share), not both",
                setting="--market-factor",
            )
    try:
        return Meter(carbon=carbon, **opts)
    except ConfigError as exc:
        raise _named(exc, given) from None


def command_settings(args: argparse.Namespace) -> dict[str, str | None]:
    """The ``METER_*`` variables ``meter run`` sets for its command (None: unset it): every
    setting given as a flag (`meter.config.Setting.flag`), so that the windows the command
    opens itself (``meter.measure``) meter what the run's summary meters, as it prices it."""
    out: dict[str, str | None] = {}
    for s in config.SETTINGS:
        if not s.flag:
            continue
        value = getattr(args, s.flag.lstrip("-").replace("-", "_"), None)
        if value is None or value is False:
            continue
        out[s.name] = "1" if value is True else str(value)
    # One market basis: the flag given replaces the other one's variable (both would fail).
    factor, share = "METER_MARKET_FACTOR_G_PER_KWH", "METER_RENEWABLE_SHARE"
    if out.get(factor) is not None:
        out[share] = None
    elif out.get(share) is not None:
        out[factor] = None
    return out


# -- meter devices ---------------------------------------------------------------------------


def cmd_devices(args: argparse.Namespace) -> int:
    from meter.devices import discover

    opts = options_from_env()
    found = discover(
        gpus=opts.get("gpus"),
        cpu=opts.get("cpu", True),
        cpu_tdp_w=opts.get("cpu_tdp_w"),
        rapl_psys=args.psys,
    )
    if args.json:
        out = {
            "devices": [
                {
                    "key": d.info.key,
                    "kind": d.info.kind,
                    "model": d.info.model,
                    "method": d.info.method,
                    "uuid": d.info.uuid,
                    "index": d.info.index,
                    "counted": d.info.counted,
                    "notes": list(d.info.notes),
                }
                for d in found.devices
            ],
            "unavailable": [
                {"key": u.key, "kind": u.kind, "reason": u.reason, "fix": u.fix}
                for u in found.unavailable
            ],
            "warnings": found.warnings,
            "notes": found.notes,
        }
        print(json.dumps(out, indent=2))
    else:
        if found.devices:
            rows = [("device", "method", "model", "uuid")]
            rows += [
                (d.info.key, d.info.method, d.info.model, d.info.uuid or "-") for d in found.devices
            ]
            _print_table(rows)
            for d in found.devices:
                for note in d.info.notes:
                    print(f"  {d.info.key}: {note}")
        else:
            print("no device can be metered here")
        if found.unavailable:
            print("\nnot available:")
            for u in found.unavailable:
                print(f"  {u.key}: {u.reason}")
                if u.fix:
                    print(f"    fix: {u.fix}")
        shown = {note for d in found.devices for note in d.info.notes}
        for note in found.notes:
            if note not in shown:
                print(f"\nnote: {note}")
        for w in found.warnings:
            print(f"\nwarning: {w}")
    for d in found.devices:
        d.close()
    return 0


def _print_table(rows: Sequence[Sequence[str]], file: Any = None) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        line = "  ".join(
            str(c).rjust(w) if _numeric(c) else str(c).ljust(w)
            for c, w in zip(r, widths, strict=True)
        )
        print(line.rstrip(), file=file or sys.stdout)


def _numeric(c: object) -> bool:
    """A number, or a number and its unit ("12.3 Wh")."""
    try:
        float(str(c).split(" ", 1)[0])
    except ValueError:
        return False
    return True


# -- meter run -------------------------------------------------------------------------------

_PYTHON = re.compile(r"^(python|pypy)[0-9.]*(\.exe)?$", re.IGNORECASE)


def run_name(command: Sequence[str]) -> str:
    """The name of a run: the program, or for Python the script or module it runs.

    >>> run_name(["python", "-u", "train.py", "--lr", "3e-4"]), run_name(["python3", "-m", "pkg"])
    ('train.py', 'pkg')
    >>> run_name(["/usr/bin/python3.11", "-c", "pass"]), run_name(["./train.sh"])
    ('python3.11 -c', 'train.sh')
    """
    program = os.path.basename(command[0])
    if not _PYTHON.match(program):
        return program
    rest = iter(command[1:])
    for arg in rest:
        if arg == "-":  # the program comes from stdin
            return program
        if not arg.startswith("-"):
            return os.path.basename(arg)
        if arg.startswith("--"):
            continue  # --version, --help..., or the -- before the script
        for i, option in enumerate(arg[1:], start=2):  # grouped flags: -um pkg, -Wignore
            if option in "cmWX":
                value = arg[i:] or next(rest, "")
                if option == "m":
                    return value or program
                if option == "c":
                    return f"{program} -c"
                break
    return program


def summary_table(m: Measurement, title: str) -> list[list[str]]:
    rows = [["device", "method", "energy_J", "energy", "avg_W", "peak_W", "model"]]
    for key, d in m.devices.items():
        flag = "" if d.counted else " (not in total)"
        flag += " ~" if d.approximate else ""
        flag += f" FAILED: {d.error}" if d.error else ""
        rows.append(
            [
                key,
                d.method,
                f"{d.energy_j:.1f}",
                format_energy(d.energy_j),
                f"{d.avg_power_w:.1f}",
                f"{d.peak_power_w:.1f}",
                d.model + flag,
            ]
        )
    rows.append(
        [
            "total",
            "",
            f"{m.energy_j:.1f}",
            format_energy(m.energy_j),
            f"{m.avg_power_w:.1f}",
            "",
            title,
        ]
    )
    return rows


def print_summary(m: Measurement, title: str, exit_code: int | None = None) -> None:
    err = sys.stderr
    code = "" if exit_code is None else f", exit code {exit_code}"
    print(f"\nmeter: {title}: {format_duration(m.duration_s)}{code}", file=err)
    _print_table(summary_table(m, ""), file=err)
    if m.dynamic_energy_j is not None:
        dynamic = m.dynamic_energy_j
        print(f"dynamic (above idle): {dynamic:.1f} J ({format_energy(dynamic)})", file=err)
    if m.co2e_g is not None and m.carbon is not None:
        c = m.carbon
        mean = c.get("intensity_g_per_kwh")
        mean_text = f"{mean:.0f} g/kWh" if mean is not None else "n/a"
        marginal = ", marginal" if c.get("marginal") else ""
        how = "--zone" if c["zone_from"] == "argument" else c["zone_from"]
        print(
            f"CO2e location-based: {format_mass(m.co2e_g)}  (zone {c['zone']} from {how}, "
            f"{c['provider']}, {mean_text}{marginal}, PUE {c['pue']:g})",
            file=err,
        )
        if m.co2e_market_g is not None:
            print(
                f"CO2e market-based:   {format_mass(m.co2e_market_g)}  ({c.get('market_basis')})",
                file=err,
            )
        if m.embodied_co2e_g is not None:
            print(
                f"CO2e embodied:       {format_mass(m.embodied_co2e_g)}  "
                "(manufacturing, amortised)",
                file=err,
            )
        for fallback in c.get("fallbacks", ()):
            print(f"carbon fallback: {fallback}", file=err)
    methods = sorted(m.methods)
    if "estimated" in methods:
        print(
            "note: 'estimated' rows are a model (TDP x utilisation), not a measurement; "
            "the warning above says how to measure instead",
            file=err,
        )
    if "simulated" in methods:
        print(
            "note: 'simulated' rows come from simulated GPUs (METER_SIMULATE_GPUS), not hardware",
            file=err,
        )
    if m.approximate:
        print(
            "note: '~' marks figures shorter than a counter update or before its phase "
            "lock (power x time)",
            file=err,
        )


# -- meter run: the live status line ---------------------------------------------------------


class LiveFigures(NamedTuple):
    """What the status line shows: the run so far, from the meter's published state."""

    elapsed_s: float
    #: Latest power per device kind ("gpu", "cpu", "dram"), watts.
    power_w: dict[str, float]
    energy_j: float
    #: Location-based CO2e so far, or None without carbon accounting.
    co2e_g: float | None


def live_figures(m: Meter) -> LiveFigures:
    """The run so far, from each device's published snapshot (no device read, never blocks):
    power of the devices that answer, by kind; energy and CO2e of the counted devices since
    the start (before any ``--gpu-correction``, which the summary applies)."""
    started = m.started_at
    elapsed = max(m.clock() - started, 0.0) if started is not None else 0.0
    power: dict[str, float] = {}
    energy = co2e = 0.0
    for info, snap, start in zip(m.infos, m.ledger.snapshots(), m.start_state, strict=False):
        if snap.error is None and snap.unreadable_since is None:
            power[info.kind] = power.get(info.kind, 0.0) + snap.power_w
        if info.counted:
            energy += snap.energy_j - start.energy_j
            co2e += snap.co2e_g - start.co2e_g
    return LiveFigures(elapsed, power, energy, co2e if m.accountant is not None else None)


def status_text(figures: LiveFigures) -> str:
    """One line: elapsed, power now per device kind, energy and CO2e so far.

    >>> status_text(LiveFigures(75.0, {"gpu": 612.4, "cpu": 45.0}, 36_000.0, 4.2))
    'meter 0:01:15 | gpu 612 W, cpu 45 W | 10.0 Wh | 4.20 g CO2e'
    """
    parts = [f"meter {format_hms(figures.elapsed_s)}"]
    if figures.power_w:
        parts.append(", ".join(f"{kind} {w:.0f} W" for kind, w in figures.power_w.items()))
    parts.append(format_energy(figures.energy_j))
    if figures.co2e_g is not None:
        parts.append(f"{format_mass(figures.co2e_g)} CO2e")
    return " | ".join(parts)


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return size.columns, size.lines


def _in_foreground(fd: int) -> bool:
    """Whether meter may draw on the terminal: it is in the terminal's foreground group (not
    sent to the background with ``&`` or ``bg``), or the terminal is not its controlling one."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return True


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


class StatusLine:
    """One line of status on the last row of a terminal, redrawn at most once per ``period_s``.

    The command writes to the same terminal, so the line never shares a row with it: the
    terminal's scrolling region (DECSTBM, ``ESC [ 1 ; rows-1 r``) leaves out the last row, the
    command's output scrolls above it, and the line is drawn there between a save and a restore
    of the cursor (``ESC 7`` ... ``ESC 8``). Each redraw is one write(2), which the terminal
    takes whole, so the command's bytes never land inside it. apt draws its progress bar the
    same way (apt-pkg/install-progress.cc, ``PackageManagerFancy``). The region is set again at
    every redraw (a resize resets it in many terminals), and `close` gives the whole screen back
    and clears the row.

    Nothing is drawn on a terminal of unknown or tiny size, or while meter is in the background.
    Full-screen programs (an editor, ``htop``) set their own region: run them with ``--quiet``.
    A meter killed by SIGKILL cannot give the row back: ``reset`` does.

    ``clock``, ``write``, ``size`` (columns, rows) and ``foreground`` are injectable for tests.
    """

    def __init__(
        self,
        fd: int,
        *,
        period_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[bytes], object] | None = None,
        size: Callable[[], tuple[int, int]] | None = None,
        foreground: Callable[[], bool] | None = None,
    ) -> None:
        self.period_s = period_s
        self._clock = clock
        self._write = write if write is not None else lambda data: _write_all(fd, data)
        self._size = size if size is not None else lambda: _terminal_size(fd)
        self._foreground = foreground if foreground is not None else lambda: _in_foreground(fd)
        self._last: float | None = None
        self._rows = 0  # the terminal's rows at the last redraw; 0 while nothing is drawn

    def update(self, text: str) -> bool:
        """Redraw the line with ``text`` (cut to the terminal's width), unless it was redrawn
        less than ``period_s`` ago; whether it was."""
        now = self._clock()
        if self._last is not None and now - self._last < self.period_s:
            return False
        self._last = now
        columns, rows = self._size()
        if rows < 3 or columns < 20 or not self._foreground():
            return False
        out = ""
        if rows != self._rows:
            # First redraw, or a resize: free the last row. The scrolling region back to the
            # whole screen (it moves the cursor home: hence save and restore), then a line
            # down and back up (IND, RI: same column; scrolls the screen up one line only if
            # the cursor was on the last row).
            out += "\x1b7\x1b[r\x1b8\x1bD\x1bM"
            self._rows = rows
        out += (
            f"\x1b7\x1b[1;{rows - 1}r"  # save the cursor; scroll only the rows above the last
            f"\x1b[{rows};1H\x1b[0m\x1b[2K{text[: columns - 1]}"  # draw on the cleared last row
            "\x1b8"  # and put the cursor back where the command left it
        )
        self._write(out.encode("utf-8", "replace"))
        return True

    def close(self) -> None:
        """Give the whole screen back and clear the line (idempotent)."""
        if not self._rows:
            return
        rows = self._size()[1] or self._rows
        self._rows = 0
        self._write(f"\x1b7\x1b[r\x1b[{rows};1H\x1b[2K\x1b8".encode())


class LiveStatus:
    """``meter run``'s status line: a daemon thread that redraws a `StatusLine` every
    ``period_s`` from `live_figures`. A terminal that fails (gone, EIO) stops the line; the
    error is kept in ``error`` and logged by `close`."""

    def __init__(self, m: Meter, line: StatusLine) -> None:
        self._meter = m
        self._line = line
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter-status", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> LiveStatus:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._line.period_s):
                self._line.update(status_text(live_figures(self._meter)))
        except Exception as exc:
            self.error = exc

    def close(self) -> None:
        """Stop the thread (joined) and clear the line. Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        try:
            self._line.close()
        except OSError as exc:
            self.error = self.error or exc
        if self.error is not None:
            log.warning("meter: the status line stopped: %s", self.error)
            self.error = None


def _status_wanted(args: argparse.Namespace) -> bool:
    """The live status is shown on a terminal (stderr), unless --quiet or METER_QUIET."""
    quiet = args.quiet or bool(config.value("METER_QUIET"))  # a bad value fails here
    term = os.environ.get("TERM", "")
    return not quiet and term not in ("", "dumb") and sys.stderr.isatty()


# -- meter run: the command ------------------------------------------------------------------


def _terminal_delivers_sigint() -> bool:
    """Whether Ctrl-C from a terminal already reaches the child (same foreground group).

    The command runs in meter's process group, also under the guardian (`meter._child`).
    """
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


# sysexits.h EX_IOERR: the command succeeded, but its record could not go to --output.
EXIT_RECORD_NOT_SAVED = 74
# What a shell reports for a program killed by SIGPIPE (its reader went away): 128 + 13.
EXIT_BROKEN_PIPE = 141


def _open_output(path: str) -> JsonlWriter:
    """The --output writer, once it is known that a record can be appended there.

    Checked before the command starts, so that a record is never found unwritable only after
    hours of training. The file is opened with the writer's own flags and closed, which creates
    it (empty) if it does not exist, as the first write would.
    """
    from meter.exporters.jsonl import JsonlWriter

    writer = JsonlWriter(path)  # a missing folder fails here, with how to fix it
    if os.path.isdir(path):
        example = os.path.join(path, "runs.jsonl")
        raise ConfigError(
            f"--output {path} is a folder; give a file, e.g. --output {example}",
            setting="--output",
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM) and os.path.exists(path):
            fix = f"make it writable (chmod u+w {path}) or choose another --output file"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            folder = os.path.dirname(os.path.abspath(path))
            fix = f"folder {folder} is not writable: choose another --output file"
        else:
            fix = "choose another --output file"
        raise ConfigError(
            f"cannot append to --output {path}: {exc.strerror or exc}; {fix}", setting="--output"
        ) from None
    os.close(fd)
    return writer


def _fallback_output() -> Path:
    """Where a run's record goes when --output fails at the end of the run:
    ``$XDG_STATE_HOME/meter/runs-fallback.jsonl``, by default
    ``~/.local/state/meter/runs-fallback.jsonl`` (a place that outlives a reboot)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "meter" / "runs-fallback.jsonl"


def _save_record(writer: JsonlWriter, record: dict[str, Any]) -> bool:
    """Append the run's record to --output, else to `_fallback_output`, else print it to stderr.

    True when it reached --output.
    """
    from meter.exporters.jsonl import JsonlWriter

    try:
        writer.write(record)
        return True
    except OSError as exc:
        failed = f"could not append the run's record to {writer.path} ({exc.strerror or exc})"
    record = {**record, "intended_output": str(writer.path)}
    try:
        fallback = _fallback_output()
    except RuntimeError as exc:  # no home directory to put it in
        problem = f"{failed}, and there is no fallback file ({exc})"
    else:
        try:
            fallback.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            JsonlWriter(fallback).write(record)
        except OSError as exc:
            problem = f"{failed} nor to {fallback} ({exc.strerror or exc})"
        else:
            _err(f"{failed}; appended it to {fallback} instead")
            return False
    _err(f"{problem}; here it is:")
    print(json.dumps(record, separators=(",", ":"), default=str), file=sys.stderr)
    return False


def _check_run_flags(args: argparse.Namespace) -> None:
    """Flags that mean nothing without another one fail, rather than being ignored."""
    needs = (
        (
            args.push_gateway,
            "--push-gateway URL",
            {
                "--push-job": args.push_job,
                "--push-interval": args.push_interval,
                "--push-basic-auth-file": args.push_basic_auth_file,
            },
        ),
        (
            args.prometheus_port,
            "--prometheus-port PORT",
            {"--prometheus-addr": args.prometheus_addr},
        ),
    )
    for present, needed, flags in needs:
        if present is not None:
            continue
        for flag, value in flags.items():
            if value is not None:
                raise ConfigError(f"{flag} needs {needed}; add it, or drop {flag}", setting=flag)


def _silence(stream: Any) -> None:
    """Send what is still written to ``stream`` to /dev/null: its reader went away (EPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _err("nothing to run: give a command after --, e.g. `meter run -- python train.py`")
        return 2
    _check_run_flags(args)
    _check_otlp(args)
    status_wanted = _status_wanted(args)
    writer = _open_output(args.output) if args.output else None
    compare = [z.strip() for z in (args.compare_zones or "").split(",") if z.strip()]
    if compare:
        from meter.carbon.accounting import compare_zones

        try:  # unknown zones fail now, before the command runs
            compare_zones(0.0, compare)
        except ConfigError as exc:
            raise ConfigError(f"--compare-zones: {exc}", setting="--compare-zones") from None
    m = _build_meter(args)
    m.start()
    run_id = uuid.uuid4().hex
    timeline = Timeline.attach(m) if writer is not None and not args.no_timeline else None
    try:
        exporters = _start_run_exporters(args, m)
    except BaseException:
        m.close()
        raise
    # The command's own windows (meter.measure) get the same settings, through its variables,
    # and with --output go to the same file, tagged with the run's id (`meter.core`).
    settings = command_settings(args)
    if writer is not None:
        settings["METER_RUN_ID"] = run_id
        settings["METER_RUN_OUTPUT"] = str(writer.path.absolute())
    for name, value in settings.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    children: list[Any] = []  # the command, once started
    pending: list[int] = []  # SIGTERMs (and SIGINTs not from the terminal) before it started

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return  # the terminal sent it to the whole foreground group, child included
        if children:
            children[0].send_signal(signum)
        else:
            pending.append(signum)

    # The handlers go in before the command starts: a Ctrl-C the moment it has started must
    # not interrupt meter itself (it used to, between the start and the handlers: exit 130).
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            # On Linux under a guardian: if meter dies, even by SIGKILL, so does the command,
            # with everything it started (`meter._child`).
            child = _child.start(command)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                _err(f"command not found: {command[0]}")
            elif isinstance(exc, PermissionError):
                _err(f"permission denied: {command[0]}")
            else:
                _err(f"cannot run {command[0]}: {exc.strerror or exc}")
            _stop_run_exporters(exporters)
            m.close()
            return 127 if isinstance(exc, FileNotFoundError) else 126
        children.append(child)
        for signum in pending:
            child.send_signal(signum)
        status = LiveStatus(m, StatusLine(sys.stderr.fileno())).start() if status_wanted else None
        try:
            while True:
                try:
                    exit_code = child.wait()
                    break
                except KeyboardInterrupt:  # pragma: no cover - handler above replaces it
                    continue
        finally:
            child.close()  # on an exception in meter, the guardian kills the command
            if status is not None:
                status.close()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    name = args.name or run_name(command)
    result = m.measure_since_start(name, error=None if exit_code == 0 else f"exit code {exit_code}")
    m.refresh()  # exporters read the published state: make it the end of the run
    _stop_run_exporters(exporters)  # the final push happens here, before the meter stops
    m.close()
    if timeline is not None:
        timeline.sample()  # the end of the run (the sampler has stopped: no tick races it)
    prices = _compare(result, compare) if compare else []
    try:
        print_summary(result, " ".join(command), exit_code)
        if prices:
            _print_comparison(result, prices)
        sys.stderr.flush()
    except BrokenPipeError:  # nobody reads stderr any more: the record still goes to --output
        _silence(sys.stderr)
    if writer is not None:
        record = run_record(
            result,
            run_id=run_id,
            command=command,
            exit_code=exit_code,
            interval_s=m.interval_s,
            prices=prices,
            timeline=timeline,
        )
        if not _save_record(writer, record):
            return EXIT_RECORD_NOT_SAVED if exit_code == 0 else exit_code
        _say_report(args.output)
    return exit_code


def run_record(
    result: Measurement,
    *,
    run_id: str,
    command: Sequence[str],
    exit_code: int,
    interval_s: float,
    prices: Sequence[ZonePrice] = (),
    timeline: Timeline | None = None,
) -> dict[str, Any]:
    """The record ``meter run --output`` appends for a run (``kind: "run"``): the run's
    `Measurement`, what ran and where, the what-if prices, and its power timeline
    (`meter.timeline.Timeline.to_dict`), last."""
    record = result.to_dict()
    record.update(
        {
            "kind": "run",
            "run_id": run_id,
            "command": list(command),
            "exit_code": exit_code,
            "host": socket.gethostname(),
            "interval_s": interval_s,
            "meter_version": __version__,
        }
    )
    if prices:
        record["compare_zones"] = [
            {"zone": p.zone, "g_per_kwh": p.g_per_kwh, "co2e_g": p.co2e_g, "source": p.source}
            for p in prices
        ]
    if timeline is not None:
        record["timeline"] = timeline.to_dict()
    return record


def _say_report(output: str) -> None:
    """The last line of a run with --output: how to turn its file into a report."""
    try:
        _err(f"report: {report_command(output)}")
    except BrokenPipeError:  # nobody reads stderr any more
        _silence(sys.stderr)


def _compare(m: Measurement, zones: list[str]) -> list[ZonePrice]:
    """What-if: the run's energy priced in other zones (embedded yearly data, location-based)."""
    from meter.carbon.accounting import compare_zones

    pue = m.carbon["pue"] if m.carbon else 1.0
    return list(compare_zones(m.energy_j, zones, pue=pue))


def _print_comparison(m: Measurement, prices: list[ZonePrice]) -> None:
    pue = m.carbon["pue"] if m.carbon else 1.0
    rows = [["zone", "name", "g/kWh", "CO2e", "source"]]
    rows += [
        [p.zone, p.name, f"{p.g_per_kwh:.0f}", format_mass(p.co2e_g), p.source] for p in prices
    ]
    energy = f"{m.energy_j:.1f} J ({format_energy(m.energy_j)})"
    print(f"\nthe same {energy} elsewhere (PUE {pue:g}):", file=sys.stderr)
    _print_table(rows, file=sys.stderr)


def _read_basic_auth(path: str | None, flag: str) -> dict[str, str] | None:
    if not path:
        return None
    from meter.exporters.prometheus import load_basic_auth

    try:
        return load_basic_auth(path)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}", setting=flag) from None


def _listen_error(exc: ConfigError, port_flag: str, addr_flag: str, addr: str) -> ConfigError:
    """An exporter's bind error, naming the flags of this command."""
    if exc.setting == "addr":
        return ConfigError(
            f"{addr_flag} {addr}: {exc}; give an address of this machine, e.g. {addr_flag} "
            "127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)",
            setting=addr_flag,
        )
    if exc.setting == "port":
        return ConfigError(str(exc).replace("(--port)", f"({port_flag})"), setting=port_flag)
    return exc


def _redact(url: str) -> str:
    """The URL without any ``user:password@`` in it, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _start_run_exporters(args: argparse.Namespace, m: Meter) -> list[Any]:
    """The Prometheus server, Pushgateway pusher and OTLP exporter ``meter run`` was asked
    for."""
    from meter.exporters.ports import DEFAULT_ADDR

    started: list[Any] = []
    try:
        if args.prometheus_port is not None:
            from meter.exporters.prometheus import start_http_server

            addr = args.prometheus_addr or DEFAULT_ADDR
            try:
                server = start_http_server(m, args.prometheus_port, addr)
            except ConfigError as exc:
                raise _listen_error(exc, "--prometheus-port", "--prometheus-addr", addr) from None
            started.append(server)
            print(f"meter: metrics at {server.url}", file=sys.stderr)
        if args.push_gateway:
            from meter.exporters.prometheus import DEFAULT_PUSH_INTERVAL_S, Pusher

            interval = DEFAULT_PUSH_INTERVAL_S if args.push_interval is None else args.push_interval
            interval = check_interval(interval, "--push-interval")
            users = _read_basic_auth(args.push_basic_auth_file, "--push-basic-auth-file")
            auth = next(iter(users.items())) if users else None
            try:
                pusher = Pusher(
                    m,
                    args.push_gateway,
                    job=args.push_job or "meter",
                    interval_s=interval,
                    basic_auth=auth,
                )
            except ConfigError as exc:
                flag = "--push-job" if exc.setting == "job" else "--push-gateway"
                raise ConfigError(f"{flag}: {exc}", setting=flag) from None
            started.append(pusher.start())
        otlp = _start_otlp(args, m)
        if otlp is not None:
            started.append(otlp)
    except BaseException:
        _stop_run_exporters(started, final_push=False)
        raise
    return started


def _stop_run_exporters(started: list[Any], final_push: bool = True) -> None:
    from meter.exporters.prometheus import Pusher

    for exporter in reversed(started):
        if type(exporter).__name__ == "OtlpExporter":  # (its module needs the otel extra)
            if exporter.close() and final_push:
                _err(f"exported the run's metrics to {_redact(exporter.url)} over OTLP")
        elif isinstance(exporter, Pusher):
            if exporter.close(final_push=final_push) and final_push:
                _err(
                    f"pushed the run's metrics to the Pushgateway {_redact(exporter.url)} "
                    f"(job {exporter.job}, {exporter.pushes} push{'es' * (exporter.pushes != 1)})"
                )
            elif final_push:
                _err(f"the final push to the Pushgateway failed: {exporter.last_error}")
        else:
            exporter.close()


# -- meter serve -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """A node exporter: all GPUs, CPU and DRAM, continuously, until SIGTERM or SIGINT."""
    from meter.exporters.prometheus import start_http_server

    if bool(args.tls_cert) != bool(args.tls_key):
        missing = "--tls-key" if args.tls_cert else "--tls-cert"
        _err(f"give both --tls-cert and --tls-key to serve HTTPS: add {missing}")
        return 2
    users = _read_basic_auth(args.basic_auth_file, "--basic-auth-file")
    _check_otlp(args)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        m = _build_meter(args)
        try:
            if not m.devices:
                _err("no device can be metered here (see `meter devices`); serving meter_info only")
            m.start()
            try:
                server = start_http_server(
                    m,
                    args.port,
                    args.addr,
                    certfile=args.tls_cert,
                    keyfile=args.tls_key,
                    basic_auth=users,
                )
            except ConfigError as exc:
                raise _listen_error(exc, "--port", "--addr", args.addr) from None
            try:
                otlp = _start_otlp(args, m)
            except BaseException:
                server.close()
                raise
            try:
                devices = ", ".join(f"{d.key} ({d.method})" for d in m.devices) or "none"
                auth = ", basic auth" if users else ""
                print(f"meter: serving {server.url}{auth}; devices: {devices}", file=sys.stderr)
                while not stop.wait(1.0):
                    pass
            finally:
                if otlp is not None:
                    m.refresh()  # the last export carries the figures of now
                    otlp.close()
                server.close()
        finally:
            m.close()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if received:
        name = signal.Signals(received[0]).name
        print(f"meter: {name} received, stopped", file=sys.stderr)
    return 0


def cmd_zones(args: argparse.Namespace) -> int:
    from meter.carbon.cli_zones import zones_command

    return zones_command(args.query, as_json=args.json)


# -- meter calibrate -------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    import psutil

    if not (args.seconds > 0 and math.isfinite(args.seconds)):
        _err("--seconds must be a positive number of seconds, e.g. --seconds 10")
        return 2
    if not 0 <= args.max_cpu_percent <= 100:
        _err("--max-cpu-percent must be between 0 and 100, e.g. --max-cpu-percent 10")
        return 2
    if config.raw("METER_SIMULATE_GPUS") is not None and args.idle_file is None:
        _err(
            "METER_SIMULATE_GPUS is set: the idle power of simulated GPUs is not saved to the "
            f"idle file ({idle.default_path()}), where it would stand for the real devices. "
            "Give a file of its own with --idle-file PATH, or unset METER_SIMULATE_GPUS to "
            "calibrate the real devices"
        )
        return 2
    m = _build_meter(args, carbon=False)
    if not m.devices:
        m.close()
        _err("no device to calibrate (see `meter devices`)")
        return 1
    print(f"measuring idle power for {args.seconds:g} s: keep the machine idle...", file=sys.stderr)
    try:
        m.wait_ready()
        me = psutil.Process()
        before, mine = psutil.cpu_times()._asdict(), sum(me.cpu_times()[:2])
        with m.measure("idle") as w:
            time.sleep(args.seconds)
        own_s = sum(me.cpu_times()[:2]) - mine  # meter's own sampling is not "busy"
        busy = idle.cpu_busy_percent(before, psutil.cpu_times()._asdict(), own_s)
    finally:
        m.close()
    assert w.result is not None
    watts = {k: d.avg_power_w for k, d in w.result.devices.items()}
    rows = [["device", "method", "idle_W"]]
    rows += [[k, d.method, f"{d.avg_power_w:.1f}"] for k, d in w.result.devices.items()]
    _print_table(rows)
    if busy is not None and busy > args.max_cpu_percent:
        what = (
            f"the CPUs were {busy:.0f}% busy during the calibration (more than "
            f"--max-cpu-percent {args.max_cpu_percent:g}): these are not idle figures"
        )
        if not args.force:
            _err(
                f"{what}, so they were not saved. Stop what is running (see `top`) and "
                "calibrate again, or add --force to save them anyway"
            )
            return 1
        _err(f"warning: {what}; saved anyway (--force)")
    try:
        path = idle.save(m.devices, watts, w.result.duration_s, args.idle_file, cpu_busy=busy)
    except OSError as exc:
        target = args.idle_file or idle.default_path()
        _err(
            f"cannot write the idle file {target}: {exc.strerror or exc}; choose a writable "
            "file with --idle-file PATH (or METER_IDLE_FILE)"
        )
        return 1
    print(f"saved to {path} (windows now report dynamic energy above these baselines)")
    return 0


# -- meter dashboard -------------------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Print the Grafana dashboard JSON (or write it to --output) for Grafana's Import."""
    from meter.exporters.grafana import dashboard_json

    text = dashboard_json()
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            _err(f"could not write --output {args.output}: {exc.strerror or exc}")
            return 1
        print(
            f"meter: wrote {args.output}; import it in Grafana: Dashboards > Import",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


# -- the parser ------------------------------------------------------------------------------


def _width() -> int:
    """The width argparse formats help to."""
    return max(shutil.get_terminal_size().columns - 2, 40)


def _text(*paragraphs: str) -> str:
    """Paragraphs wrapped to the help's width (descriptions are printed as given)."""
    return "\n\n".join(textwrap.fill(p, _width()) for p in paragraphs)


def _plain(markdown: str) -> str:
    """A declaration's help without its Markdown: `code` -> code, [text](#anchor) -> text."""
    text = re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r"\1 (README)", markdown)
    return text.replace("`", "")


def environment_help(
    names: Sequence[str], flags: Sequence[str] = (), title: str = "environment"
) -> str:
    """The help's list of ``METER_*`` variables: each with its meaning, default and flag (when
    the command has it), from `meter.config`."""
    if not names:
        return f"{title}: no METER_* variable applies (`meter --help` lists them all)"
    width = _width()
    flagged = {s.name: s.flag for s in map(config.setting, names) if s.flag and s.flag in flags}
    lines = [f"{title} (a flag given overrides its variable):" if flagged else f"{title}:"]
    column = 26
    for name in names:
        s = config.setting(name)
        extra = [f"default: {_plain(s.default)}"] if s.default else []
        if name in flagged:
            extra.append(f"flag {s.flag}")
        text = _plain(s.help) + (f" ({'; '.join(extra)})" if extra else "")
        head = f"  {name}"
        if len(head) <= column - 2:
            first = head.ljust(column) + text
            lines += textwrap.wrap(first, width, subsequent_indent=" " * column)
        else:
            lines.append(head)
            lines += textwrap.wrap(
                text, width, initial_indent=" " * column, subsequent_indent=" " * column
            )
    return "\n".join(lines)


_DEVICE_VARIABLES = (
    "METER_GPUS",
    "METER_NO_CPU",
    "METER_CPU_TDP_W",
    "METER_GPU_CORRECTION",
    "METER_PER_RANK",
    "METER_SIMULATE_GPUS",
)
_METER_VARIABLES = ("METER_INTERVAL_S", *_DEVICE_VARIABLES, "METER_IDLE_FILE", "METER_MAX_WINDOWS")
_CARBON_VARIABLES = tuple(s.name for s in config.SETTINGS if s.group == "carbon")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as given (already wrapped); ``meter run``'s command shown as
    ``-- CMD [ARGS ...]`` rather than argparse's ``...`` for the rest of the line."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.nargs == argparse.REMAINDER:
            return "-- CMD [ARGS ...]"
        return super()._format_args(action, default_metavar)


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped command or option (difflib)."""

    _commands: Any = None  # the action of add_subparsers

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def options(self) -> list[str]:
        """Every option string of this parser (its parents' included)."""
        return [o for action in self._actions for o in action.option_strings]

    def commands(self) -> dict[str, _Parser]:
        """The subcommands' parsers, by name."""
        return dict(self._commands.choices) if self._commands is not None else {}

    def error(self, message: str) -> NoReturn:
        hint = ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            candidates = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), candidates, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        elif message.startswith("unrecognized arguments: "):
            guesses = {}  # typed -> closest option
            for word in message.split(": ", 1)[1].split():
                typed = word.split("=", 1)[0]
                close = difflib.get_close_matches(typed, self.options(), n=1, cutoff=0.6)
                if typed.startswith("-") and close:
                    guesses[typed] = close[0]
            if len(guesses) == 1:
                hint = f"; did you mean {next(iter(guesses.values()))}?"
            elif guesses:
                hint = "; did you mean " + ", ".join(f"{o} (for {t})" for t, o in guesses.items())
                hint += "?"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")


def _env_help(name: str) -> str:
    """A flag's help suffix: the variable it mirrors and its default (`meter.config`)."""
    declared = config.setting(name)
    default = f", default {_plain(declared.default)}" if declared.default else ""
    return f" (env {name}{default})"


def _otlp_option(parser: argparse.ArgumentParser) -> None:
    """``--otlp [URL]`` (`meter.exporters.otlp`), in its own group of ``parser``'s help."""
    group = parser.add_argument_group("OpenTelemetry")
    group.add_argument(
        "--otlp",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="also export over OTLP/HTTP (hw.energy, hw.power, ...) to URL, e.g. "
        "http://collector:4318 (/v1/metrics is appended); without URL, "
        "OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables decide (needs pip "
        "install '.[otel]')",
    )


def _start_otlp(args: argparse.Namespace, m: Meter) -> Any:
    """The OTLP exporter asked for with ``--otlp``, or None."""
    if args.otlp is None:
        return None
    from meter.exporters.otlp import start_otlp

    try:
        exporter = start_otlp(m, args.otlp or None)
    except ConfigError as exc:
        raise ConfigError(f"--otlp: {exc}", setting="--otlp") from None
    print(f"meter: exporting to {_redact(exporter.url)} over OTLP", file=sys.stderr)
    return exporter


def _check_otlp(args: argparse.Namespace) -> None:
    """``--otlp`` without the otel extra fails before anything runs."""
    if getattr(args, "otlp", None) is None:
        return
    from meter.exporters.otlp import metrics_url, require

    require()
    if args.otlp:
        try:
            metrics_url(args.otlp)
        except ConfigError as exc:
            raise ConfigError(
                f"--otlp: {exc} (to export where the OTEL_* variables say, put -- before the "
                "command: meter run --otlp -- CMD)",
                setting="--otlp",
            ) from None


def _device_options() -> argparse.ArgumentParser:
    """The options shared by the commands that meter devices (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("devices")
    group.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help="sampling interval, seconds" + _env_help("METER_INTERVAL_S"),
    )
    group.add_argument(
        "--gpus",
        default=None,
        metavar="0,1",
        help="GPU ordinals to meter" + _env_help("METER_GPUS"),
    )
    group.add_argument(
        "--no-cpu",
        action="store_true",
        help="do not meter CPU/DRAM" + _env_help("METER_NO_CPU"),
    )
    group.add_argument(
        "--gpu-correction",
        default=None,
        metavar="auto|FAMILY",
        help="undo the published GPU sensor gain/offset (a100, rtx3090, rtx4090, rtxa5000), "
        "labelled when on" + _env_help("METER_GPU_CORRECTION"),
    )
    return parent


def _carbon_options() -> argparse.ArgumentParser:
    """The carbon options shared by the commands that price energy (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("carbon")
    group.add_argument(
        "--zone",
        default=None,
        metavar="Z",
        help="grid zone, e.g. DE, US-CAL-CISO, aws:us-east-1" + _env_help("METER_ZONE"),
    )
    group.add_argument(
        "--pue",
        type=float,
        default=None,
        metavar="P",
        help="data-centre power usage effectiveness" + _env_help("METER_PUE"),
    )
    group.add_argument(
        "--market-factor",
        type=float,
        default=None,
        metavar="G",
        help="contractual emission factor, gCO2e/kWh, for the market-based CO2e"
        + _env_help("METER_MARKET_FACTOR_G_PER_KWH"),
    )
    group.add_argument(
        "--renewable-share",
        type=float,
        default=None,
        metavar="F",
        help="certified renewable share 0..1, for the market-based CO2e"
        + _env_help("METER_RENEWABLE_SHARE"),
    )
    return parent


def _port(text: str) -> int:
    """A TCP port number (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number, e.g. 10144") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{port} is not a TCP port: use 1 to 65535 (0 picks a free one)"
        )
    return port


def _finish(p: _Parser, variables: Sequence[str], title: str = "environment") -> None:
    """The epilog: the variables the command reads, with the flags it has for them."""
    p.epilog = environment_help(variables, p.options(), title)


def build_parser() -> _Parser:
    from meter.exporters.ports import DEFAULT_ADDR, DEFAULT_PORT

    common: dict[str, Any] = {"formatter_class": _Formatter}
    p = _Parser(
        prog="meter",
        description=_text(
            "Live energy and carbon metering of GPUs (NVML), CPUs and DRAM (RAPL): joules, "
            "watts and CO2e per run, per device.",
            "`meter COMMAND --help` shows a command's options and the METER_* variables it reads.",
        ),
        **common,
    )
    p.add_argument("--version", action="version", version=f"meter {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    d = sub.add_parser(
        "devices",
        help="list the devices that can be metered, and why not others",
        description=_text(
            "List the devices meter can measure here (GPUs through NVML, CPU and DRAM through "
            "RAPL, or a CPU estimate), how each one is measured, and for any other why not, "
            "with the fix."
        ),
        **common,
    )
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--psys", action="store_true", help="also list the RAPL psys domain")
    d.set_defaults(func=cmd_devices)
    _finish(d, _DEVICE_VARIABLES)

    devices_opts = _device_options()
    carbon_opts = _carbon_options()
    r = sub.add_parser(
        "run",
        help="run a command and meter it",
        parents=[devices_opts, carbon_opts],
        description=_text(
            "Run CMD and meter it from start to end. The summary (per device: joules, Wh, "
            "average and peak watts; CO2e) goes to stderr, and one JSON record per run to "
            "--output. meter exits with CMD's exit code and forwards SIGINT and SIGTERM to it.",
            "CMD gets every setting given here in its METER_* variable (--zone as METER_ZONE, "
            "--pue as METER_PUE, ...), so windows it opens itself (meter.measure) meter and "
            "price what the summary does.",
            "With --output, the run's record holds its power timeline (mean, min and max watts "
            "per device; --no-timeline leaves it out), and the windows CMD records itself "
            "(meter.measure, the Lightning and Transformers callbacks) are appended to the same "
            "file before it, tagged with the run's id (METER_RUN_OUTPUT, METER_RUN_ID). The "
            "last line on stderr says how to make the HTML report.",
            "On a terminal, a status line on the last row shows the run so far (elapsed, power, "
            "energy, CO2e), redrawn once a second; --quiet turns it off.",
        ),
        **common,
    )
    r.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="append one JSON record per run"
    )
    r.add_argument(
        "--no-timeline",
        action="store_true",
        help="leave the power timeline (mean, min and max watts per device, at most 2,000 "
        "points) out of the --output record",
    )
    r.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help="name of the run in the record (default: the script or module CMD runs)",
    )
    r.add_argument(
        "--compare-zones",
        default=None,
        metavar="Z1,Z2",
        help="also price the run's energy in these zones, e.g. FR,PL,US-TEX-ERCO",
    )
    r.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no live status line on the terminal" + _env_help("METER_QUIET"),
    )
    prom = r.add_argument_group("Prometheus")
    prom.add_argument(
        "--prometheus-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port while the command runs",
    )
    prom.add_argument(
        "--prometheus-addr",
        default=None,
        metavar="ADDR",
        help="bind address of --prometheus-port (default 127.0.0.1)",
    )
    prom.add_argument(
        "--push-gateway",
        default=None,
        metavar="URL",
        help="push metrics to this Prometheus Pushgateway periodically and at the end",
    )
    prom.add_argument(
        "--push-job", default=None, metavar="NAME", help="Pushgateway job name (default meter)"
    )
    prom.add_argument(
        "--push-interval",
        type=float,
        default=None,
        metavar="S",
        help="seconds between pushes (default 15)",
    )
    prom.add_argument(
        "--push-basic-auth-file",
        default=None,
        metavar="FILE",
        help="file with user:password for the Pushgateway",
    )
    _otlp_option(r)
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="the command to meter")
    r.set_defaults(func=cmd_run)
    _finish(r, (*_METER_VARIABLES, "METER_SYNC_CUDA", "METER_QUIET", *_CARBON_VARIABLES))

    s = sub.add_parser(
        "serve",
        help="Prometheus exporter: all devices, continuously, until SIGTERM",
        parents=[devices_opts, carbon_opts],
        description=_text(
            "Serve energy, power and CO2e of every GPU, CPU and DRAM at /metrics until SIGTERM "
            f"or SIGINT. The default port {DEFAULT_PORT} clashes with no common exporter "
            "(node_exporter 9100, dcgm-exporter 9400, ...)."
        ),
        **common,
    )
    s.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    s.add_argument(
        "--addr",
        default=DEFAULT_ADDR,
        metavar="ADDR",
        help=f"bind address (default {DEFAULT_ADDR}; 0.0.0.0 for all interfaces)",
    )
    s.add_argument("--tls-cert", default=None, metavar="FILE", help="PEM certificate: serve HTTPS")
    s.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key of --tls-cert")
    s.add_argument(
        "--basic-auth-file",
        default=None,
        metavar="FILE",
        help="require basic auth: a file of user:password lines (keep it chmod 600)",
    )
    _otlp_option(s)
    s.set_defaults(func=cmd_serve)
    _finish(s, (*_METER_VARIABLES, *_CARBON_VARIABLES))

    z = sub.add_parser(
        "zones",
        help="list grid zones with their carbon intensity",
        description=_text(
            "List the grid zones of the embedded carbon data with their intensity (gCO2e/kWh), "
            "year and source. QUERY filters them: part of a key or name, an ISO country code "
            "(FR, DEU) or a cloud region (aws:us-east-1). A zone found here is what --zone and "
            "METER_ZONE take."
        ),
        **common,
    )
    z.add_argument("query", nargs="?", default=None, help="part of a zone key or name")
    z.add_argument("--json", action="store_true", help="machine-readable output")
    z.set_defaults(func=cmd_zones)
    _finish(z, ("METER_ZONE",))

    c = sub.add_parser(
        "calibrate",
        help="measure idle power (keep the machine idle)",
        parents=[devices_opts],
        description=_text(
            "Measure each device's idle power for --seconds and save it to the idle file; "
            "windows then also report their dynamic energy, above these baselines.",
            "Keep the machine idle meanwhile: when the CPUs are busier than --max-cpu-percent "
            "(system-wide, default 10%), nothing is saved unless --force. Simulated GPUs "
            "(METER_SIMULATE_GPUS) are only saved to a file given with --idle-file.",
        ),
        **common,
    )
    c.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="how long to measure (default 10)",
    )
    c.add_argument(
        "--idle-file",
        "--file",
        default=None,
        metavar="FILE",
        help="where to save" + _env_help("METER_IDLE_FILE"),
    )
    c.add_argument(
        "--max-cpu-percent",
        type=float,
        default=idle.BUSY_CPU_PERCENT,
        metavar="PCT",
        help="the busiest the CPUs may be, system-wide, for an idle measurement "
        f"(default {idle.BUSY_CPU_PERCENT:g})",
    )
    c.add_argument(
        "--force", action="store_true", help="save the figures even if the CPUs were busy"
    )
    c.set_defaults(func=cmd_calibrate)
    _finish(c, ("METER_INTERVAL_S", *_DEVICE_VARIABLES, "METER_IDLE_FILE"))

    g = sub.add_parser(
        "dashboard",
        help="print the Grafana dashboard JSON (Dashboards > Import)",
        description=_text(
            "Print the Grafana dashboard of meter's Prometheus metrics as JSON, or write it to "
            "--output; import it in Grafana under Dashboards > Import."
        ),
        **common,
    )
    g.add_argument("-o", "--output", default=None, metavar="FILE", help="write it to FILE")
    g.set_defaults(func=cmd_dashboard)
    _finish(g, ())

    from meter import report  # (its plotly part is imported only to write a page)

    _finish(cast(_Parser, report.add_parser(sub, **common)), ())  # (sub makes _Parsers)

    _finish(
        p,
        [s.name for s in config.SETTINGS],
        "environment (each command's --help lists those it reads)",
    )
    return p


# -- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``meter``'s entry point: the exit code. A closed pipe on stdout (``meter zones | head``)
    ends it quietly with `EXIT_BROKEN_PIPE`, as SIGPIPE ends other programs."""
    try:
        rc = _main(argv)
        sys.stdout.flush()  # now, where a closed pipe can be caught, not at interpreter exit
    except BrokenPipeError:
        _silence(sys.stdout)
        _silence(sys.stderr)
        return EXIT_BROKEN_PIPE
    return rc


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.commands().get(getattr(args, "cmd", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc: int = args.func(args)
    except MeterError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 128 + signal.SIGINT
    except BrokenPipeError:
        raise
    except OSError as exc:  # a file or socket the user named: say which, without a traceback
        log.debug("meter: %s", exc, exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        _err(f"{where}{exc.strerror or exc} (run `meter -v ...` for the details)")
        return 2
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

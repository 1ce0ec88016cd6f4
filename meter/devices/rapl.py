"""CPU package and DRAM energy from Linux powercap RAPL (Intel; AMD Zen via the same driver).

The kernel's ``intel_rapl_common`` driver exposes one directory per RAPL zone under
``/sys/class/powercap`` (flat symlinks into ``/sys/devices/virtual/powercap``)::

    intel-rapl:0        name=package-0   whole socket 0
    intel-rapl:0:0      name=core        part of package-0 (skipped: no double counting)
    intel-rapl:0:1      name=uncore      part of package-0 (skipped)
    intel-rapl:0:2      name=dram        memory of socket 0 -> dram:0
    intel-rapl:1        name=package-1 or psys
    intel-rapl-mmio:0   name=package-0   the same energy through the MMIO interface (a twin)

Each zone has ``energy_uj`` (a wrapping microjoule counter), ``max_energy_range_uj`` (where it
wraps) and ``name``. `open_rapl` turns them into counter devices (``cpu:N``, ``dram:N`` and, on
request, ``psys:0``) whose ``read()`` returns joules since open, wraparound already handled.
Every counter value is checked (`meter.devices.counters`): a fall is a wrap only when the
wrapped increment is plausible for the zone's power, so a counter that drops without wrapping
(100 J to 0) is a restart or a bad read, never +262 kJ.

Example::

    zones, unavailable = open_rapl()
    for zone in zones:
        print(zone.info.key, zone.read().energy_j)
    for u in unavailable:
        print(u.key, u.reason, u.fix)
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meter.devices.base import DeviceInfo, Kind, Reading, Unavailable
from meter.devices.counters import CounterValidator
from meter.errors import BadReading, DeviceError, DeviceUnavailable

log = logging.getLogger("meter")

__all__ = ["DEFAULT_POWERCAP_ROOT", "RaplZone", "open_rapl", "read_cpu_model"]

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"

#: Reads a whole small text file (``name``, ``energy_uj``...) and returns its content.
Reader = Callable[[str], str]

# Enough for any energy_uj: a u64 has at most 20 digits, plus the newline.
_READ_SIZE = 32

# "intel-rapl:0", "intel-rapl:0:2", "intel-rapl-mmio:0". The bare control-type directories
# ("intel-rapl", "intel-rapl-mmio") and other powercap drivers ("dtpm", ...) do not match.
_ZONE_RE = re.compile(r"^(intel-rapl(?:-mmio)?):(\d+)(?::(\d+))?$")
# "package-0"; on multi-die parts (e.g. Cascade Lake-AP) the driver names each die's zone
# "package-0-die-1" (drivers/powercap/intel_rapl_common.c, rapl_init_domains()).
_PACKAGE_RE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")

_MSR = "intel-rapl"
_MMIO = "intel-rapl-mmio"
_KIND_ORDER: dict[str, int] = {"cpu": 0, "dram": 1, "psys": 2}

_PSYS_NOTE = "psys covers the whole SoC including package and DRAM, so it is not added to totals"

#: The power bound of a zone's counter check (`meter.devices.counters`) when its constraint
#: files give no sane figure (DRAM zones often report 0, VMs hide them): above any single
#: package or DRAM zone made so far (the largest server parts are limited to about 500 W).
DEFAULT_MAX_POWER_W: Final = 1000.0
#: A zone's constraint files give a limit (``constraint_N_power_limit_uw``) and the
#: hardware's maximum (``constraint_N_max_power_uw``) for the long-term (PL1), short-term (PL2)
#: and peak (PL4) windows. The bound is the largest of them times this: a limit is an average
#: over its window (the package runs above PL1 up to PL2 for seconds), and a limit that is not
#: enabled is not enforced at all.
_LIMIT_HEADROOM: Final = 2.0
#: The bound never goes below this, so that a tiny or stale limit (a few watts on some DRAM
#: zones) cannot make every true read look implausible.
_MIN_MAX_POWER_W: Final = 100.0
#: Constraint values above this (watts) are not believed: the default is used.
_SANE_LIMIT_W: Final = 10_000.0
#: Constraints the driver exposes per zone: long_term, short_term, peak_power (and spare).
_CONSTRAINTS: Final = 4


def _read_text(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def read_cpu_model(cpuinfo: str = "/proc/cpuinfo", *, reader: Reader | None = None) -> str:
    """The CPU's marketing name: the first ``model name`` in ``cpuinfo``.

    Falls back to ``platform.processor()`` (often just ``x86_64``, or empty) when the file is
    missing or has no ``model name`` line (ARM kernels print none).

    >>> isinstance(read_cpu_model(), str)
    True
    """
    try:
        text = (reader or _read_text)(cpuinfo)
    except (OSError, UnicodeDecodeError):
        return platform.processor()
    for line in text.splitlines():
        field, sep, value = line.partition(":")
        if sep and field.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor()


def _root_only(energy_path: str, *, device: str) -> DeviceUnavailable:
    # Since Linux 5.10 (and stable backports) energy_uj is mode 0400: unprivileged reads of the
    # energy counter leak enough to attack SGX enclaves ("Platypus", CVE-2020-8694). The parent
    # of the zone entry holds the control-type directory, which holds every zone of that type.
    zone = Path(energy_path).parent
    control = zone.name.split(":", 1)[0]
    return DeviceUnavailable(
        f"RAPL energy file {energy_path} is readable by root only (Linux >= 5.10, CVE-2020-8694)",
        device=device,
        fix=(
            f"sudo chmod -R a+r {zone.parent / control}  "
            "(until reboot; for a lasting fix add a udev rule, see README) or run as root"
        ),
    )


class RaplZone:
    """One RAPL zone as a counter `~meter.devices.Device`: joules since open, wraparound handled.

    Usually made by `open_rapl`. ``path`` is the zone directory (``.../intel-rapl:0``). By
    default the ``energy_uj`` file descriptor stays open and each read is one ``os.pread``; with
    ``reader`` every read goes through it instead (tests, unusual filesystems).

    Opening raises `~meter.errors.DeviceUnavailable` (with ``fix``) when the zone cannot be read;
    a read that fails later raises `~meter.errors.DeviceError`. ``read()`` is thread-safe.

    The zone must be read at least once per wrap period (``max_energy_range_uj`` uJ of energy:
    about 262 kJ on many Intel parts, some 17 minutes at 250 W, less on some AMD parts); the
    sampler reads far more often than that.

    Every value is checked (`meter.devices.counters.CounterValidator`, kept as `validator`)
    against ``max_power_w``: by default the largest sane ``constraint_*_max_power_uw`` /
    ``constraint_*_power_limit_uw`` of the zone times 2 (at least 100 W), else
    `DEFAULT_MAX_POWER_W`. A fall is a wrap only when the wrapped increment is plausible, a
    restart when the new value is itself plausible (energy since the restart), else a bad
    read: `read` raises `meter.errors.BadReading` and the next read goes on from the last good
    value. ``clock`` (monotonic seconds, default ``time.perf_counter`` as `meter.Meter`'s) times
    the reads.
    """

    info: DeviceInfo
    #: The counter check of this zone.
    validator: CounterValidator

    def __init__(
        self,
        path: str | os.PathLike[str],
        info: DeviceInfo,
        *,
        reader: Reader | None = None,
        clock: Callable[[], float] | None = None,
        max_power_w: float | None = None,
    ) -> None:
        self.info = info
        self.path = Path(path)
        self._energy_path = os.fspath(self.path / "energy_uj")
        self._reader = reader
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._finalizer: weakref.finalize[[int], RaplZone] | None = None
        self._closed = False
        self._clock: Callable[[], float] = clock or time.perf_counter

        self.max_energy_range_uj: int = self._open_int("max_energy_range_uj")
        if self.max_energy_range_uj <= 0:
            raise DeviceUnavailable(
                f"RAPL zone {self.path} reports max_energy_range_uj={self.max_energy_range_uj}, "
                "so its counter cannot be unwrapped",
                device=info.key,
                fix="report this CPU and kernel version to the meter issue tracker",
            )
        if reader is None:
            try:
                fd = os.open(self._energy_path, os.O_RDONLY)
            except PermissionError as e:
                raise _root_only(self._energy_path, device=info.key) from e
            except OSError as e:
                raise self._open_failed(e) from e
            self._fd = fd
            # Closes the descriptor if the zone is dropped without close().
            self._finalizer = weakref.finalize(self, os.close, fd)
        try:
            first_uj = self._read_uj()
        except PermissionError as e:
            self.close()
            raise _root_only(self._energy_path, device=info.key) from e
        except (OSError, ValueError) as e:
            self.close()
            raise self._open_failed(e) from e
        #: The power bound of the counter check, in watts (see the class docstring).
        self.max_power_w = self._max_power_w() if max_power_w is None else max_power_w
        # The counter wraps to 0 after max_energy_range_uj. The validator handles it, once,
        # with this zone's own range (ranges differ between packages, DRAM and CPU vendors),
        # and converts uJ -> J (units_per_j), adding the integers exactly.
        self.validator = CounterValidator(
            info.key,
            first_uj,
            self._clock(),
            max_power_w=self.max_power_w,
            wrap=self.max_energy_range_uj,
            units_per_j=1_000_000,
        )

    def _max_power_w(self) -> float:
        """The largest sane constraint of the zone times `_LIMIT_HEADROOM` (at least
        `_MIN_MAX_POWER_W`), else `DEFAULT_MAX_POWER_W`. Missing or unreadable files are
        skipped: they are optional in the kernel's powercap ABI."""
        read_text = self._reader or _read_text
        found_w: list[float] = []
        for index in range(_CONSTRAINTS):
            for name in ("max_power_uw", "power_limit_uw"):
                path = os.fspath(self.path / f"constraint_{index}_{name}")
                try:
                    watts = int(read_text(path)) / 1e6
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
                if math.isfinite(watts) and 0 < watts <= _SANE_LIMIT_W:
                    found_w.append(watts)
        if not found_w:
            return DEFAULT_MAX_POWER_W
        return max(max(found_w) * _LIMIT_HEADROOM, _MIN_MAX_POWER_W)

    def _open_int(self, name: str) -> int:
        path = os.fspath(self.path / name)
        try:
            return int((self._reader or _read_text)(path))
        except (OSError, ValueError) as e:
            raise self._open_failed(e, path) from e

    def _open_failed(self, error: Exception, path: str | None = None) -> DeviceUnavailable:
        return DeviceUnavailable(
            f"RAPL zone {self.path} is listed but {path or self._energy_path} cannot be read: "
            f"{error} (common in VMs that expose the zone without the counter)",
            device=self.info.key,
            fix="check `dmesg | grep -i rapl`; on a VM, ask for RAPL passthrough or use the "
            "CPU estimate",
        )

    def _read_uj(self) -> int:
        if self._fd is not None:
            # sysfs regenerates an attribute's text on every read at offset 0
            # (Documentation/filesystems/sysfs.rst), so one pread per sample is a fresh value.
            # pread leaves the shared file offset alone: safe across threads and after fork().
            return int(os.pread(self._fd, _READ_SIZE, 0))
        assert self._reader is not None
        return int(self._reader(self._energy_path))

    def read(self) -> Reading:
        """Joules since open. Raises `~meter.errors.DeviceError` when the counter cannot be read,
        `~meter.errors.BadReading` when its value cannot be true (the read is ignored)."""
        with self._lock:
            if self._closed:
                raise DeviceError(
                    f"RAPL zone {self.info.key} ({self.path}) is closed; open it again with "
                    "meter.devices.rapl.open_rapl()",
                    device=self.info.key,
                )
            try:
                now_uj = self._read_uj()
            except PermissionError as e:
                root_only = _root_only(self._energy_path, device=self.info.key)
                raise DeviceUnavailable(
                    f"reading {self._energy_path} failed mid-run: {e}; {root_only.reason}",
                    device=self.info.key,
                    fix=root_only.fix,
                ) from e
            except (OSError, ValueError) as e:
                raise DeviceError(
                    f"reading RAPL zone {self.info.key} ({self._energy_path}) failed mid-run: "
                    f"{e}. The driver may have been unloaded; meter skips this zone from now on, "
                    "check `dmesg | grep -i rapl`",
                    device=self.info.key,
                ) from e
            # Wraps, restarts and bad values are told apart here, once (see the validator).
            verdict = self.validator.update(now_uj, self._clock())
            if not verdict.accepted:
                raise BadReading(verdict.message, device=self.info.key)
            if verdict.message:  # a restart or a rebase: energy goes on, but say so
                log.warning("meter: RAPL zone %s: %s", self.path, verdict.message)
            return Reading(energy_j=verdict.energy_j)

    def close(self) -> None:
        """Release the file descriptor. Idempotent; ``read()`` raises afterwards."""
        with self._lock:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()
            self._fd = None

    def __repr__(self) -> str:
        return f"RaplZone({self.info.key!r}, path={os.fspath(self.path)!r})"


@dataclass
class _Entry:
    """One listed zone directory, before it becomes a device."""

    entry: str  # "intel-rapl:0:2"
    control: str  # "intel-rapl" or "intel-rapl-mmio"
    top: int  # 0 in "intel-rapl:0:2"
    sub: int | None  # 2 in "intel-rapl:0:2", None for a top-level zone
    path: Path
    name: str = ""


def _no_rapl(root: Path, detail: str = "") -> tuple[list[RaplZone], list[Unavailable]]:
    reason = (
        f"no RAPL powercap interface at {root} (not Linux, or a VM/container without it, "
        f"or the intel_rapl_common module is not loaded){detail}"
    )
    return [], [
        Unavailable(
            key="cpu",
            kind="cpu",
            reason=reason,
            fix="sudo modprobe intel_rapl_common; in a container, mount /sys/class/powercap "
            "read-only",
        )
    ]


def _sort_key(entry: _Entry) -> tuple[bool, int, int]:
    # MSR zones first, so that an MMIO twin is only kept where its MSR zone is missing.
    return (entry.control != _MSR, entry.top, -1 if entry.sub is None else entry.sub)


def open_rapl(
    root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
    *,
    psys: bool = False,
    reader: Reader | None = None,
    cpuinfo: str = "/proc/cpuinfo",
    clock: Callable[[], float] | None = None,
) -> tuple[list[RaplZone], list[Unavailable]]:
    """Open every usable RAPL zone under ``root``; list the ones that cannot be used, and why.

    Returns ``(zones, unavailable)``. Zones are ``cpu:N`` (``package-N``) and ``dram:N`` (the
    ``dram`` subzone of package N); ``core`` and ``uncore`` are parts of the package and are
    skipped. ``psys:0`` (platform energy, which already contains package and DRAM) is opened
    only with ``psys=True``, and is marked ``counted=False``. A zone of the MMIO interface
    (``intel-rapl-mmio:*``) is dropped when the MSR interface has the same zone.

    ``reader`` replaces every file read (no descriptor is kept open): pass
    ``meter.testing.rapl.FakeRapl(...).reader`` to read a fake tree as an unprivileged user would.
    ``cpuinfo`` is where the CPU model name comes from. ``clock`` times the counter reads (see
    `RaplZone`; default ``time.perf_counter``).

    Never raises for missing or unreadable hardware: with no powercap directory, the result is
    ``([], [Unavailable(key="cpu", ...)])`` with the fix.

    >>> zones, unavailable = open_rapl("/nonexistent")
    >>> zones, unavailable[0].key
    ([], 'cpu')
    """
    root_path = Path(root)
    read_text = reader or _read_text
    try:
        # The entries are symlinks on real systems; is_dir() follows them.
        listed = [e for e in os.scandir(root_path) if e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return _no_rapl(root_path)
    except OSError as err:
        return _no_rapl(root_path, f"; listing it failed: {err}")

    entries: list[_Entry] = []
    for dir_entry in listed:
        m = _ZONE_RE.match(dir_entry.name)
        if m is None:
            continue
        entries.append(
            _Entry(
                entry=dir_entry.name,
                control=m.group(1),
                top=int(m.group(2)),
                sub=None if m.group(3) is None else int(m.group(3)),
                path=root_path / dir_entry.name,
            )
        )
    if not entries:
        return _no_rapl(root_path)
    entries.sort(key=_sort_key)

    model = read_cpu_model(cpuinfo, reader=reader)
    unavailable: list[Unavailable] = []
    for e in entries:
        try:
            e.name = read_text(os.fspath(e.path / "name")).strip()
        except (OSError, UnicodeDecodeError) as err:
            e.name = ""
            unavailable.append(
                Unavailable(
                    key=e.entry,
                    kind="cpu",
                    reason=f"cannot read the name of RAPL zone {e.path}: {err}",
                    fix="check the permissions of /sys/class/powercap (names are world-readable "
                    "on a normal system)",
                    model=model,
                )
            )

    # package-N -> cpu:N. Multi-die parts name each die's zone package-N-die-D; there the dies
    # are numbered in order (cpu:0, cpu:1, ...) and the note keeps the driver's name.
    packages: set[tuple[int, int]] = set()
    multi_die = False
    for e in entries:
        m = _PACKAGE_RE.match(e.name) if e.sub is None else None
        if m is not None:
            packages.add((int(m.group(1)), int(m.group(2) or 0)))
            multi_die = multi_die or m.group(2) is not None
    die_index = {pd: i for i, pd in enumerate(sorted(packages))}

    def package_index(name: str) -> int | None:
        m = _PACKAGE_RE.match(name)
        if m is None:
            return None
        if multi_die:
            return die_index[(int(m.group(1)), int(m.group(2) or 0))]
        return int(m.group(1))

    top_names = {(e.control, e.top): e.name for e in entries if e.sub is None}

    chosen: dict[str, tuple[_Entry, Kind, int, tuple[str, ...], bool]] = {}
    psys_count = 0
    for e in entries:
        kind: Kind
        counted = True
        where = f"RAPL zone {e.entry} ({e.name})"
        if e.sub is None:
            index = package_index(e.name)
            if index is not None:
                kind = "cpu"
                notes: tuple[str, ...] = (f"{where}: whole package, core and uncore included",)
            elif e.name == "psys":
                if not psys:
                    continue
                kind, index, counted = "psys", psys_count, False
                psys_count += 1
                notes = (f"{where}: {_PSYS_NOTE}",)
            else:
                continue  # an unknown or unreadable top-level zone
        elif e.name == "dram":
            kind = "dram"
            parent = package_index(top_names.get((e.control, e.top), ""))
            index = e.top if parent is None else parent
            notes = (f"{where}: memory attached to this package",)
        else:
            # core (PP0) and uncore (PP1, integrated graphics) are parts of the package energy:
            # adding them would count the same joules twice.
            continue
        key = f"{kind}:{index}"
        if key in chosen:
            # MSR zones sort first: this is an MMIO twin of a zone already taken (same energy
            # through the other interface), or a duplicate name the driver should not produce.
            continue
        if e.control == _MMIO:
            notes = (
                *notes,
                "read through the MMIO interface: the MSR interface has no zone "
                f"named {e.name} here",
            )
        chosen[key] = (e, kind, index, notes, counted)

    zones: list[RaplZone] = []
    for key, (e, kind, index, notes, counted) in chosen.items():
        info = DeviceInfo(
            key=key,
            kind=kind,
            method="counter",
            counter=True,
            model=model,
            index=index,
            notes=notes,
            counted=counted,
        )
        try:
            zones.append(RaplZone(e.path, info, reader=reader, clock=clock))
        except DeviceUnavailable as err:
            unavailable.append(
                Unavailable(key=key, kind=kind, reason=err.reason, fix=err.fix, model=model)
            )

    def order(key: str) -> tuple[int, int, str]:
        kind, _, index = key.partition(":")
        return (_KIND_ORDER.get(kind, 9), int(index) if index.isdigit() else -1, key)

    zones.sort(key=lambda z: order(z.info.key))
    unavailable.sort(key=lambda u: order(u.key))
    return zones, unavailable

"""A fake Linux powercap RAPL tree: real directories and files, laid out as the kernel does.

Use it in tests of anything that reads RAPL, yours included::

    from meter.devices.rapl import open_rapl
    from meter.testing.rapl import FakeRapl

    def test_cpu_energy(tmp_path):
        fake = FakeRapl(tmp_path / "powercap", sockets=2)
        zones, unavailable = open_rapl(fake.root, reader=fake.reader)
        fake.add_energy("cpu:1", 12.5)
        assert {z.info.key: z.read().energy_j for z in zones}["cpu:1"] == 12.5

The tree is flat, like ``/sys/class/powercap`` (where the entries are symlinks, which a reader
must follow)::

    intel-rapl/           enabled                  (the control type; not a zone)
    intel-rapl:0/         name=package-0  energy_uj  max_energy_range_uj  enabled
    intel-rapl:0:0/       name=core       (core=True)
    intel-rapl:0:1/       name=uncore     (core=True)
    intel-rapl:0:2/       name=dram       (dram=True; intel-rapl:0:0 when core=False)
    intel-rapl:1/         name=package-1  (sockets=2)
    intel-rapl:<sockets>/ name=psys       (psys=True)
    intel-rapl-mmio:0/    name=package-0  (mmio_twins=True: the same energy through MMIO)
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["FakeRapl"]

_READABLE = 0o444  # how the kernel shows name, max_energy_range_uj, and energy_uj before 5.10
_ROOT_ONLY = 0o400  # energy_uj since Linux 5.10 (CVE-2020-8694)


class FakeRapl:
    """A fake RAPL powercap tree under ``root``, with counters a test drives by hand.

    Device keys are those `meter.devices.rapl.open_rapl` gives: ``cpu:N`` (``package-N``),
    ``dram:N`` and ``psys:0``; ``core:N`` and ``uncore:N`` name the package's subzones (which
    ``open_rapl`` skips). Counters wrap at ``max_energy_range_uj`` like the hardware's.

    Faults: `set_energy_uj` sets a counter to any value in range, so a test can make it drop
    without wrapping (``set_energy_uj(key, 0)``: a restart; a lower value: a step back) or jump.
    `set_power_limit` writes a zone's ``constraint_N_*`` files (none by default, as in many
    VMs), from which `meter` takes the power bound of its counter check.

    ``reader`` reads files as an unprivileged user would, even when the test runs as root: pass
    it as ``open_rapl(fake.root, reader=fake.reader)`` to see `make_root_only` take effect. It
    also serialises with the fake's writes, so use it when other threads read while the test
    adds energy: the default descriptor path (``os.pread``) on a regular file can, rarely, see a
    value half-written.
    """

    def __init__(
        self,
        root: Path,
        *,
        sockets: int = 1,
        dram: bool = True,
        core: bool = True,
        psys: bool = False,
        mmio_twins: bool = False,
        max_energy_range_uj: int = 262_143_328_850,
        initial_uj: int = 0,
    ) -> None:
        if sockets < 1:
            raise ValueError(f"FakeRapl needs sockets >= 1, got {sockets}")
        if max_energy_range_uj <= 0:
            raise ValueError(f"max_energy_range_uj must be > 0, got {max_energy_range_uj}")
        if not 0 <= initial_uj <= max_energy_range_uj:
            raise ValueError(
                f"initial_uj must be within 0..max_energy_range_uj ({max_energy_range_uj}), "
                f"got {initial_uj}"
            )
        self.root = Path(root)
        self.max_energy_range_uj = max_energy_range_uj
        self._lock = threading.RLock()
        self._zones: dict[str, Path] = {}  # key -> MSR zone dir
        self._twins: dict[str, Path] = {}  # key -> MMIO zone dir

        self.root.mkdir(parents=True, exist_ok=True)
        self._control("intel-rapl")
        for n in range(sockets):
            self._zones[f"cpu:{n}"] = self._zone(f"intel-rapl:{n}", f"package-{n}", initial_uj)
            subzones = (["core", "uncore"] if core else []) + (["dram"] if dram else [])
            for i, name in enumerate(subzones):
                self._zones[f"{name}:{n}"] = self._zone(f"intel-rapl:{n}:{i}", name, initial_uj)
        if psys:
            self._zones["psys:0"] = self._zone(f"intel-rapl:{sockets}", "psys", initial_uj)
        if mmio_twins:
            self._control("intel-rapl-mmio")
            for n in range(sockets):
                self._twins[f"cpu:{n}"] = self._zone(
                    f"intel-rapl-mmio:{n}", f"package-{n}", initial_uj
                )

    # -- layout --------------------------------------------------------------------------------

    def _control(self, entry: str) -> None:
        path = self.root / entry
        path.mkdir(exist_ok=True)
        self._create(path / "enabled", "1\n", 0o644)

    def _zone(self, entry: str, name: str, initial_uj: int) -> Path:
        path = self.root / entry
        path.mkdir()
        self._create(path / "name", f"{name}\n", _READABLE)
        self._create(path / "energy_uj", f"{initial_uj}\n", _READABLE)
        self._create(path / "max_energy_range_uj", f"{self.max_energy_range_uj}\n", _READABLE)
        # "enabled" is the zone's power-limit switch, not the counter's: reads ignore it.
        self._create(path / "enabled", "0\n" if ":" in entry.split(":", 1)[1] else "1\n", 0o644)
        return path

    @staticmethod
    def _create(path: Path, text: str, mode: int) -> None:
        path.write_text(text, encoding="ascii")
        path.chmod(mode)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every zone's key, ``cpu:0``, ``core:0``, ``dram:0``... (MMIO twins share theirs)."""
        return tuple(self._zones)

    def path(self, key: str, *, mmio: bool = False) -> Path:
        """The zone directory of ``key`` (its MMIO twin's with ``mmio=True``)."""
        zones = self._twins if mmio else self._zones
        try:
            return zones[key]
        except KeyError:
            kind = "MMIO twin" if mmio else "zone"
            raise KeyError(
                f"this FakeRapl has no {kind} {key!r}; it has {', '.join(zones) or 'none'}"
            ) from None

    def _dirs(self, key: str) -> list[Path]:
        """The existing zone dirs holding ``key``'s counter: the MSR zone and its MMIO twin."""
        dirs = [self.path(key)] + ([self._twins[key]] if key in self._twins else [])
        present = [d for d in dirs if (d / "energy_uj").exists()]
        if not present:
            raise FileNotFoundError(
                errno.ENOENT, f"every zone of {key!r} was removed from the fake tree", str(dirs[0])
            )
        return present

    # -- counters ------------------------------------------------------------------------------

    def energy_uj(self, key: str, *, mmio: bool = False) -> int:
        """The raw counter of ``key`` as the file holds it now."""
        with self._lock:
            return int((self.path(key, mmio=mmio) / "energy_uj").read_text(encoding="ascii"))

    def add_energy(self, key: str, joules: float) -> None:
        """Add ``joules`` to ``key``'s counter (and its MMIO twin's), wrapping like the hardware."""
        if not math.isfinite(joules) or joules < 0:
            raise ValueError(
                f"RAPL counters only go up: add_energy needs joules >= 0, got {joules!r} "
                "(use set_energy_uj to model a reset)"
            )
        delta_uj = round(joules * 1e6)
        with self._lock:
            for zone in self._dirs(key):
                energy = zone / "energy_uj"
                now_uj = int(energy.read_text(encoding="ascii"))
                self._write_uj(energy, (now_uj + delta_uj) % self.max_energy_range_uj)

    def set_energy_uj(self, key: str, value: int) -> None:
        """Set ``key``'s raw counter (and its MMIO twin's) to ``value`` microjoules: any value
        in range, so a lower one models a counter that restarts (0) or steps back without
        wrapping, a much higher one a counter that jumps."""
        if not 0 <= value <= self.max_energy_range_uj:
            raise ValueError(
                f"energy_uj must be within 0..{self.max_energy_range_uj} "
                f"(max_energy_range_uj), got {value}"
            )
        with self._lock:
            for zone in self._dirs(key):
                self._write_uj(zone / "energy_uj", value)

    def _write_uj(self, energy: Path, value: int) -> None:
        data = f"{value}\n".encode("ascii")
        # Written in place, never replaced, so a reader holding the file open (the default
        # os.pread path) sees the new value; data first, then the length, so it is never empty.
        mode = energy.stat().st_mode
        try:
            fd = os.open(energy, os.O_WRONLY)
        except PermissionError:  # not root, and the file is 0444 / 0400 like the kernel's
            energy.chmod(stat.S_IMODE(mode) | stat.S_IWUSR)
            try:
                fd = os.open(energy, os.O_WRONLY)
            finally:
                energy.chmod(stat.S_IMODE(mode))
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def set_power_limit(
        self,
        key: str,
        power_limit_w: float | None,
        *,
        max_power_w: float | None = None,
        constraint: int = 0,
        name: str = "long_term",
    ) -> None:
        """Write constraint ``constraint`` of ``key``'s zone (and its MMIO twin's), as the
        kernel lays it out: ``constraint_N_name``, ``constraint_N_power_limit_uw`` and, when
        given, ``constraint_N_max_power_uw`` (watts here, microwatts in the files). ``None``
        leaves that file out (or removes it)."""
        if constraint < 0:
            raise ValueError(f"constraint must be >= 0, got {constraint}")
        for what, watts in (("power_limit_w", power_limit_w), ("max_power_w", max_power_w)):
            if watts is not None and not (math.isfinite(watts) and watts >= 0):
                raise ValueError(f"{what} must be finite watts >= 0 or None, got {watts!r}")
        with self._lock:
            for zone in self._dirs(key):
                prefix = f"constraint_{constraint}_"
                self._replace(zone / f"{prefix}name", f"{name}\n", _READABLE)
                for suffix, watts in (
                    ("power_limit_uw", power_limit_w),
                    ("max_power_uw", max_power_w),
                ):
                    path = zone / f"{prefix}{suffix}"
                    if watts is None:
                        path.unlink(missing_ok=True)
                    else:
                        self._replace(path, f"{round(watts * 1e6)}\n", _READABLE)

    @classmethod
    def _replace(cls, path: Path, text: str, mode: int) -> None:
        path.unlink(missing_ok=True)
        cls._create(path, text, mode)

    # -- permissions ---------------------------------------------------------------------------

    def make_root_only(self, key: str | None = None) -> None:
        """Make ``energy_uj`` mode 0400, as Linux >= 5.10 does (CVE-2020-8694).

        Only ``key``'s zone (not its MMIO twin) when given, else every zone, twins included.
        Only `reader` honours it when the test runs as root.
        """
        with self._lock:
            zones = [self.path(key)] if key else [*self._zones.values(), *self._twins.values()]
            for zone in zones:
                (zone / "energy_uj").chmod(_ROOT_ONLY)

    @property
    def reader(self) -> Callable[[str], str]:
        """Read a file as an unprivileged user: `PermissionError` without the others-read bit."""

        def read(path: str) -> str:
            if not os.stat(path).st_mode & stat.S_IROTH:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            with self._lock, open(path, encoding="utf-8") as f:
                return f.read()

        return read

    def __repr__(self) -> str:
        return f"FakeRapl({os.fspath(self.root)!r}, keys={list(self._zones)})"

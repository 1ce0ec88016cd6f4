"""A labelled CPU energy *estimate* for machines where RAPL cannot be read: TDP x utilisation.

This is not a measurement. It is used only when no RAPL zone is readable (a VM, a container
without ``/sys/class/powercap``, a kernel that made ``energy_uj`` root-only), reported with
``method="estimated"``, and ``meter devices`` shows why RAPL was unavailable and how to fix it.

Example::

    cpu = CpuEstimate(tdp_w=65.0)
    ...  # work
    print(cpu.read())  # Reading(energy_j=..., power_w=...)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from meter.devices.base import DeviceInfo, Reading
from meter.devices.rapl import read_cpu_model
from meter.errors import ConfigError, DeviceError

__all__ = ["DEFAULT_CPU_TDP_W", "CpuEstimate"]

#: Thermal design power assumed when the user gives none, in watts for the whole machine's CPUs.
#: 100 W sits in the middle of what a busy mid-range part draws: desktop CPUs are rated 65-125 W,
#: a server socket 150-350 W, a laptop 15-45 W. Override it with the ``tdp_w`` argument or the
#: ``METER_CPU_TDP_W`` environment variable (read by the configuration, not here); the figure
#: shows in the device's model string so a result never hides the assumption.
DEFAULT_CPU_TDP_W = 100.0


def _utilisation(before: dict[str, float], after: dict[str, float]) -> float | None:
    """System CPU utilisation (0..1) between two ``cpu_times()._asdict()``; None if no tick."""
    # CPU times can step backwards on Linux and Windows (psutil issues #392, #645, #1210);
    # like psutil and top, trim each field's negative delta to zero.
    delta = {name: max(after[name] - before.get(name, 0.0), 0.0) for name in after}
    total = sum(delta.values())
    # On Linux, guest and guest_nice are already counted in user and nice (kernel >= 2.6.24,
    # kernel/sched/cputime.c); psutil's cpu_percent() takes them out of the total likewise.
    total -= delta.get("guest", 0.0) + delta.get("guest_nice", 0.0)
    if total <= 0:
        return None
    # iowait is not part of idle on Linux, but the CPU is not working either.
    idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
    return min(max(1.0 - idle / total, 0.0), 1.0)


class CpuEstimate:
    """CPU energy estimated as ``tdp_w`` x system CPU utilisation, as a counter device ``cpu:0``.

    Utilisation over each interval between reads comes from ``cpu_times()`` deltas
    (``1 - (idle + iowait) / total``), not from ``psutil.cpu_percent``, whose module-level state
    the user's own code may share. ``read()`` integrates power over the time since the previous
    read (rectangle rule, the interval's mean utilisation) and returns cumulative joules since
    the device was made, with the interval's power. ``tdp_w`` covers all sockets together.

    ``cpu_times`` and ``clock`` are injectable for tests; ``model`` replaces the CPU name read
    from ``/proc/cpuinfo``. ``read()`` is thread-safe.

    >>> cpu = CpuEstimate(tdp_w=65.0)
    >>> cpu.info.method, cpu.read().energy_j >= 0.0
    ('estimated', True)
    """

    info: DeviceInfo

    def __init__(
        self,
        tdp_w: float = DEFAULT_CPU_TDP_W,
        *,
        cpu_times: Callable[[], Any] = psutil.cpu_times,
        clock: Callable[[], float] = time.perf_counter,
        model: str | None = None,
    ) -> None:
        if (
            isinstance(tdp_w, bool)
            or not isinstance(tdp_w, (int, float))
            or not math.isfinite(tdp_w)
            or tdp_w <= 0
        ):
            raise ConfigError(
                f"cpu_tdp_w must be a positive number of watts, got {tdp_w!r}: pass tdp_w= (or "
                "set METER_CPU_TDP_W) to your CPU's rated power, e.g. 65 for a desktop or the "
                "sum over sockets for a server",
                setting="cpu_tdp_w",
            )
        self.tdp_w = float(tdp_w)
        self._cpu_times = cpu_times
        self._clock = clock
        cpu = read_cpu_model() if model is None else model
        self.info = DeviceInfo(
            key="cpu:0",
            kind="cpu",
            method="estimated",
            counter=True,
            model=f"{cpu or 'CPU'} (estimate: TDP {self.tdp_w:g} W x utilisation)",
            index=0,
            notes=(
                f"an estimate, not a measurement: TDP {self.tdp_w:g} W x system CPU utilisation; "
                "readable RAPL gives measured figures (see `meter devices` for the fix)",
            ),
        )
        self._lock = threading.Lock()
        self._last_t_s = clock()
        self._last_times = self._times()
        self._energy_j = 0.0
        self._power_w = 0.0

    def _times(self) -> dict[str, float]:
        try:
            return dict(self._cpu_times()._asdict())
        except Exception as e:
            raise DeviceError(
                f"the CPU estimate could not read CPU times: {e!r}; check that psutil works "
                "here (python -c 'import psutil; print(psutil.cpu_times())')",
                device=self.info.key,
            ) from e

    def read(self) -> Reading:
        """Estimated joules since the device was made, and the last interval's watts."""
        with self._lock:
            now_s = self._clock()
            times = self._times()
            busy = _utilisation(self._last_times, times)
            if busy is not None:
                self._power_w = self.tdp_w * busy
            # else: no clock tick since the last read; keep the last interval's power.
            # Rectangle rule: this interval's mean utilisation over its whole duration.
            self._energy_j += self._power_w * max(now_s - self._last_t_s, 0.0)
            self._last_t_s, self._last_times = now_s, times
            return Reading(energy_j=self._energy_j, power_w=self._power_w)

    def close(self) -> None:
        """Nothing to release; present for the device protocol."""

    def __repr__(self) -> str:
        return f"CpuEstimate(tdp_w={self.tdp_w:g})"

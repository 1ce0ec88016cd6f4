"""A labelled CPU energy *estimate* for machines where RAPL cannot be read: TDP x utilisation.

This is not a measurement. It is used only when no RAPL zone is readable (a VM, a container
without ``/sys/class/powercap``, a kernel that made ``energy_uj`` root-only), reported with
``method="estimated"``, and ``meter devices`` shows why RAPL was unavailable and how to fix it.

The TDP is the one given (``tdp_w=``, ``METER_CPU_TDP_W``), else `default_tdp_w`:
`WATTS_PER_LOGICAL_CPU` times the logical CPUs psutil sees, so a 2-vCPU VM is not priced like
a 100 W desktop part.

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

__all__ = ["WATTS_PER_LOGICAL_CPU", "CpuEstimate", "default_tdp_w", "logical_cpus"]

#: Watts one logical CPU draws at full load, for the default TDP when none is given: Cloud
#: Carbon Footprint's average maximum watts per vCPU for AWS, 3.5 W (``MAX_WATTS_AVG`` in
#: cloud-carbon-footprint packages/aws/src/domain/AwsFootprintEstimationConstants.ts, and the
#: "Compute" coefficients of its methodology page), which CCF derives from SPECpower results for
#: the CPU microarchitectures AWS runs. Its other clouds agree within 20 %: Azure 3.54 W (average),
#: GCP 4.11 W (median). Per part it spreads wider (CCF: 1.69 W for AMD EPYC 2nd gen, 4.26 W
#: Skylake, 8.58 W Sandy Bridge), so this is an estimate of a typical server CPU, not of this one.
#:
#: Per *logical* CPU (hardware thread), not per physical core: CCF's figure is per vCPU, which is
#: one hardware thread; the estimate runs mostly in VMs and containers (no RAPL), whose vCPUs are
#: what the guest sees as logical CPUs and where psutil often cannot tell physical cores
#: (``cpu_count(logical=False)`` may be None); and the utilisation it multiplies is taken over all
#: logical CPUs (system-wide ``cpu_times()``).
WATTS_PER_LOGICAL_CPU = 3.5


def logical_cpus() -> int:
    """The logical CPUs of the machine (``psutil.cpu_count()``; 1 if psutil cannot tell)."""
    return psutil.cpu_count(logical=True) or 1


def default_tdp_w(cpus: int | None = None) -> float:
    """The TDP assumed when none is given: `WATTS_PER_LOGICAL_CPU` x ``cpus`` (by default
    `logical_cpus`), in watts for all the machine's CPUs together.

    >>> default_tdp_w(8)
    28.0
    """
    return WATTS_PER_LOGICAL_CPU * (logical_cpus() if cpus is None else cpus)


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
    the device was made, with the interval's power. ``tdp_w`` covers all sockets together; None
    (the default) means `default_tdp_w` for ``cpus`` logical CPUs (by default those psutil
    sees). ``tdp_basis`` says where the figure came from, for messages.

    ``cpu_times``, ``cpus`` and ``clock`` are injectable for tests; ``model`` replaces the CPU
    name read from ``/proc/cpuinfo``. ``read()`` is thread-safe.

    >>> cpu = CpuEstimate(tdp_w=65.0)
    >>> cpu.info.method, cpu.read().energy_j >= 0.0
    ('estimated', True)
    >>> CpuEstimate(cpus=4).tdp_basis
    '3.5 W x 4 logical CPUs'
    """

    info: DeviceInfo

    def __init__(
        self,
        tdp_w: float | None = None,
        *,
        cpus: int | None = None,
        cpu_times: Callable[[], Any] = psutil.cpu_times,
        clock: Callable[[], float] = time.perf_counter,
        model: str | None = None,
    ) -> None:
        basis = "given"
        if tdp_w is None:
            count = logical_cpus() if cpus is None else cpus
            tdp_w = default_tdp_w(count)
            basis = f"{WATTS_PER_LOGICAL_CPU:g} W x {count} logical CPU{'' if count == 1 else 's'}"
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
        #: Where ``tdp_w`` came from: ``given``, or the default's sum (``3.5 W x 8 logical CPUs``).
        self.tdp_basis = basis
        self._cpu_times = cpu_times
        self._clock = clock
        cpu = read_cpu_model() if model is None else model
        given = " (given)" if basis == "given" else ""
        notes = [
            f"an estimate, not a measurement: TDP {self.tdp_w:g} W{given} x system CPU "
            'utilisation; readable RAPL gives measured figures (README, "RAPL permissions")'
        ]
        if not given:
            notes.append(
                f"TDP {self.tdp_w:g} W = {basis}, Cloud Carbon Footprint's average maximum watts "
                "per vCPU (a typical server CPU, not this one); set METER_CPU_TDP_W or "
                "Meter(cpu_tdp_w=...) to your CPUs' rated power"
            )
        self.info = DeviceInfo(
            key="cpu:0",
            kind="cpu",
            method="estimated",
            counter=True,
            model=f"{cpu or 'CPU'} (estimate: TDP {self.tdp_w:g} W x utilisation)",
            index=0,
            notes=tuple(notes),
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

"""The device protocol: what every energy source (NVML GPU, RAPL zone, psutil estimate) offers.

A device is opened by a probe (``meter.devices.discover``), then read many times by the sampler
and at window boundaries, possibly from several threads at once, then closed.

``read()`` returns a `Reading`:

* a *counter* device (``info.counter is True``) returns ``energy_j``: cumulative joules since the
  device was opened, monotonic, already corrected for wraparound and converted from mJ/uJ.
  It may also return ``power_w`` when it has it for free.
* a *power* device (``info.counter is False``) returns ``power_w`` only (instantaneous watts);
  the ledger integrates it over time.

Units are converted at the device boundary and nowhere else: everything past ``read()`` is joules,
watts and seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

#: How a figure was obtained. Part of every result; never hidden.
Method = Literal["counter", "sampled", "estimated", "simulated"]
METHODS: tuple[str, ...] = ("counter", "sampled", "estimated", "simulated")

#: What a device measures.
Kind = Literal["gpu", "cpu", "dram", "psys"]


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and how it measures.

    ``key`` is the name used everywhere else: ``gpu:0`` (the CUDA-visible ordinal), ``cpu:0``
    (socket 0 package), ``dram:0``, ``psys:0``.
    ``method`` is what results report; ``counter`` says how ``read()`` behaves (cumulative
    energy, or power to integrate). A simulated GPU has ``method="simulated"`` whatever its
    ``counter`` is. ``notes`` carry facts a user should see in ``meter devices`` (e.g. "MIG
    instance MIG-...: energy is metered for the whole parent GPU").
    """

    key: str
    kind: Kind
    method: Method
    counter: bool
    model: str = ""
    uuid: str | None = None
    index: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: False for a device whose energy already contains others' (RAPL psys holds package and
    #: DRAM): it is reported, but not added to a window's total.
    counted: bool = True


@dataclass(frozen=True)
class Reading:
    """One read of a device. Joules are cumulative since open; watts are instantaneous."""

    energy_j: float | None = None
    power_w: float | None = None


@runtime_checkable
class Device(Protocol):
    """An open energy source. ``read()`` must be thread-safe and cheap (microseconds)."""

    info: DeviceInfo

    def read(self) -> Reading: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Unavailable:
    """A device that is present but cannot be used here, with the reason and the fix.

    Listed by ``meter devices``; never silently replaced.
    """

    key: str
    kind: Kind
    reason: str
    fix: str | None = None
    model: str = ""

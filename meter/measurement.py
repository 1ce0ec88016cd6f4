"""`Measurement`: the frozen result of one window."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class DeviceMeasurement:
    """One device's part of a window.

    ``method`` says how the figure was obtained: ``counter`` (hardware energy counter),
    ``sampled`` (power readings integrated), ``estimated`` (no sensor: a model) or
    ``simulated`` (a simulated GPU). ``approximate`` is set when the window was shorter than
    the counter's update period (power x time) or the counter was not yet phase-locked.
    """

    energy_j: float
    avg_power_w: float
    peak_power_w: float
    method: str
    model: str = ""
    approximate: bool = False
    idle_power_w: float | None = None
    dynamic_energy_j: float | None = None
    counted: bool = True
    error: str | None = None
    co2e_g: float | None = None
    co2e_market_g: float | None = None
    embodied_co2e_g: float | None = None
    #: The GPU family whose sensor gain and offset were undone (``gpu_correction``), or None.
    correction: str | None = None
    #: What went wrong with the device during the window (ignored reads, time it could not be
    #: read, a boundary that did not wait for a hung call, a lost counter); empty when nothing.
    faults: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        """Dict-style access, so ``m.devices["gpu:0"]["energy_j"]`` works too."""
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "energy_j": self.energy_j,
            "avg_power_w": self.avg_power_w,
            "peak_power_w": self.peak_power_w,
            "method": self.method,
            "model": self.model,
            "approximate": self.approximate,
        }
        if self.idle_power_w is not None:
            d["idle_power_w"] = self.idle_power_w
            d["dynamic_energy_j"] = self.dynamic_energy_j
        if self.co2e_g is not None:
            d["co2e_g"] = self.co2e_g
        if self.co2e_market_g is not None:
            d["co2e_market_g"] = self.co2e_market_g
        if self.embodied_co2e_g is not None:
            d["embodied_co2e_g"] = self.embodied_co2e_g
        if self.correction is not None:
            d["correction"] = self.correction
        if not self.counted:
            d["counted"] = False
        if self.error is not None:
            d["error"] = self.error
        if self.faults:
            d["faults"] = list(self.faults)
        return d


@dataclass(frozen=True)
class Measurement:
    """The energy of one window: what `with meter.measure(...) as w:` leaves in ``w.result``.

    ``energy_j`` sums the devices whose ``counted`` is true. ``co2e_g`` is location-based (grid
    intensity of each sample interval x energy x PUE); ``co2e_market_g`` is market-based (when a
    contract factor, a renewable share or a Google CFE share applies); ``embodied_co2e_g`` is the
    devices' manufacturing footprint amortised over this window's time; ``carbon`` says how
    (zone, provider, mean intensity, PUE, fallbacks). ``dynamic_energy_j`` is the energy
    above idle (``energy - idle power x duration``) summed over the devices whose idle power is
    known (see ``devices[...].idle_power_w``); None when none is known. For a window in a
    shared group, the figures are this window's fair share.

    >>> import meter
    >>> with meter.measure("step") as w:   # doctest: +SKIP
    ...     train_step()
    >>> w.result.energy_j                  # doctest: +SKIP
    151.2
    """

    name: str
    start_time: float
    end_time: float
    duration_s: float
    energy_j: float
    devices: Mapping[str, DeviceMeasurement]
    dynamic_energy_j: float | None = None
    co2e_g: float | None = None
    co2e_market_g: float | None = None
    embodied_co2e_g: float | None = None
    carbon: Mapping[str, Any] | None = None
    group: str | None = None
    approximate: bool = False
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", MappingProxyType(dict(self.devices)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        if self.carbon is not None:
            object.__setattr__(self, "carbon", MappingProxyType(dict(self.carbon)))

    @property
    def avg_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def methods(self) -> set[str]:
        return {d.method for d in self.devices.values()}

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict (what the JSONL log writes)."""
        d: dict[str, Any] = {
            "name": self.name,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "avg_power_w": self.avg_power_w,
            "dynamic_energy_j": self.dynamic_energy_j,
            "co2e_g": self.co2e_g,
            "co2e_market_g": self.co2e_market_g,
            "embodied_co2e_g": self.embodied_co2e_g,
            "approximate": self.approximate,
            "devices": {k: v.to_dict() for k, v in self.devices.items()},
        }
        if self.carbon is not None:
            d["carbon"] = dict(self.carbon)
        if self.group is not None:
            d["group"] = self.group
        if self.error is not None:
            d["error"] = self.error
        if self.extra:
            d.update(self.extra)
        return d

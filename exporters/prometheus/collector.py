"""`MeterCollector`: a Prometheus custom collector that builds meter's metrics at scrape time.

A scrape never reads a device and never waits on one: it reads each track's published snapshot
(`meter.ledger.Track.snapshot`), replaced whole by the sampler after every read, so a hung
driver call cannot hang ``/metrics`` and no scrape sees a torn state. The figures are those of
the sampler's latest tick (at most one sampling interval old), not carried forward: the ledger
never steps back, so every counter exposed is monotonic without any bookkeeping here, and no
joule is exposed before it was measured.

Metric names are a contract with the Grafana dashboard and with users (see `METRICS`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry

if TYPE_CHECKING:
    from meter.core import Meter

#: Every metric the collector exposes: name -> (type, labels). ``meter_info`` is an info metric
#: (rendered as the gauge ``meter_info`` with value 1).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "meter_energy_joules_total": ("counter", ("device", "kind", "model", "uuid", "method")),
    "meter_power_watts": ("gauge", ("device", "kind", "model", "uuid", "method")),
    "meter_co2e_grams_total": ("counter", ("device", "accounting")),
    "meter_grid_carbon_intensity_grams_per_kwh": ("gauge", ("zone", "source")),
    "meter_pue": ("gauge", ()),
    "meter_idle_power_watts": ("gauge", ("device",)),
    "meter_device_up": ("gauge", ("device",)),
    "meter_device_read_errors_total": ("counter", ("device",)),
    "meter_device_rejected_reads_total": ("counter", ("device",)),
    "meter_device_unreadable_seconds_total": ("counter", ("device",)),
    "meter_start_time_seconds": ("gauge", ()),
    "meter_window_energy_joules_total": ("counter", ("window",)),
    "meter_window_co2e_grams_total": ("counter", ("window",)),
    "meter_window_seconds_total": ("counter", ("window",)),
    "meter_windows_total": ("counter", ("window",)),
    "meter_info": ("info", ("version", "zone")),
}

_DEVICE_LABELS = ["device", "kind", "model", "uuid", "method"]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _counter(value: float) -> float:
    """A finite, non-negative figure (counters and power never show NaN or below zero)."""
    return max(_finite(value), 0.0)


class MeterCollector:
    """Expose a `Meter` to Prometheus, built at scrape time from the sampler's latest values.

    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry()
    >>> registry.register(MeterCollector(meter))      # doctest: +SKIP
    >>> print(generate_latest(registry).decode())     # doctest: +SKIP

    Device counters count from the meter's `start` (so they begin near 0 and stay monotonic
    for the life of the meter); before the meter is started only ``meter_info`` and the static
    gauges are exposed. ``include_windows=False`` leaves out the per-window series (one set per
    window name: at most the meter's ``max_windows`` names, plus ``other`` for the windows of
    later names).
    """

    def __init__(self, meter: Meter, *, include_windows: bool = True) -> None:
        self.meter = meter
        self.include_windows = include_windows

    def describe(self) -> list[Metric]:
        """Nothing: registering the collector must not run a collection (the metric set is
        dynamic: devices, windows, zones)."""
        return []

    # -- collect -----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Build every family from the meter's state (no device read, no NVML call)."""
        from meter import __version__

        meter = self.meter
        accountant = meter.accountant
        tracks = list(meter.ledger.tracks)
        started = meter.started_at is not None
        base = meter.start_state if started else ()

        info = InfoMetricFamily("meter", "meter build and configuration", labels=[])
        info.add_metric(
            [], {"version": __version__, "zone": accountant.zone.key if accountant else ""}
        )
        yield info

        energy = CounterMetricFamily(
            "meter_energy_joules",
            "Energy used by the device since the meter started, in joules",
            labels=_DEVICE_LABELS,
        )
        power = GaugeMetricFamily(
            "meter_power_watts",
            "Latest power of the device, in watts (absent while the device cannot be read)",
            labels=_DEVICE_LABELS,
        )
        co2e = CounterMetricFamily(
            "meter_co2e_grams",
            "CO2e of the device since the meter started, in grams: location-based (grid "
            "intensity x PUE), market-based, and embodied (manufacturing, amortised)",
            labels=["device", "accounting"],
        )
        up = GaugeMetricFamily(
            "meter_device_up",
            "1 while the device answers; 0 while it cannot be read (failed reads, retried with "
            "backoff, or a call that hangs) and once it is marked failed (its counters freeze)",
            labels=["device"],
        )
        errors = CounterMetricFamily(
            "meter_device_read_errors",
            "Failed reads of the device",
            labels=["device"],
        )
        rejected = CounterMetricFamily(
            "meter_device_rejected_reads",
            "Reads ignored because their value could not be true (an energy counter that "
            "stepped back or jumped past the power limit)",
            labels=["device"],
        )
        unreadable = CounterMetricFamily(
            "meter_device_unreadable_seconds",
            "Seconds the device could not be read (failed reads or a hung call)",
            labels=["device"],
        )
        market_on = accountant is not None and accountant.market is not None
        embodied = meter.embodied_co2e_g() if started else {}
        for i, track in enumerate(tracks):
            info_ = track.info
            key = info_.key
            snap = track.snapshot()
            labels = [key, info_.kind, info_.model, info_.uuid or "", info_.method]
            down = snap.error is not None or snap.unreadable_since is not None
            up.add_metric([key], 0.0 if down else 1.0)
            errors.add_metric([key], float(snap.read_errors))
            rejected.add_metric([key], float(snap.rejected_reads))
            unreadable.add_metric([key], _counter(snap.unreadable_until(meter.ledger.clock())))
            if not started or i >= len(base):
                continue
            e0, g0, m0 = base[i]
            used = snap.energy_j - e0
            watts = snap.power_w
            correction = meter.corrections[i] if i < len(meter.corrections) else None
            if correction is not None:  # asked for with gpu_correction; noted on the device
                elapsed = (snap.t or 0.0) - (meter.started_at or 0.0)
                used = correction.energy_j(used, elapsed)
                watts = correction.power_w(watts)
            energy.add_metric(labels, _counter(used))
            if not down:
                power.add_metric(labels, _counter(watts))
            if accountant is not None:
                co2e.add_metric([key, "location"], _counter(snap.co2e_g - g0))
                if market_on:
                    co2e.add_metric([key, "market"], _counter(snap.co2e_market_g - m0))
            if key in embodied:
                co2e.add_metric([key, "embodied"], _counter(embodied[key]))
        yield energy
        yield power
        yield co2e
        yield up
        yield errors
        yield rejected
        yield unreadable

        if accountant is not None:
            current = accountant.current
            if current is not None:
                intensity = GaugeMetricFamily(
                    "meter_grid_carbon_intensity_grams_per_kwh",
                    "Grid carbon intensity in force, in gCO2e/kWh (before PUE)",
                    labels=["zone", "source"],
                )
                intensity.add_metric([accountant.zone.key, current.source], current.g_per_kwh)
                yield intensity
            yield GaugeMetricFamily(
                "meter_pue", "Power usage effectiveness applied to CO2e", value=accountant.pue
            )

        if meter.idle_power_w:
            idle = GaugeMetricFamily(
                "meter_idle_power_watts",
                "Idle power of the device (configured or from `meter calibrate`), in watts",
                labels=["device"],
            )
            for key, watts in sorted(meter.idle_power_w.items()):
                idle.add_metric([key], watts)
            yield idle

        if meter.started_wall is not None:
            yield GaugeMetricFamily(
                "meter_start_time_seconds",
                "When the meter started, in seconds since the Unix epoch",
                value=meter.started_wall,
            )

        if self.include_windows:
            yield from self._windows()

    def _windows(self) -> Iterable[Metric]:
        stats = sorted(list(self.meter.window_stats.items()))  # a copy: record() may insert
        families = (
            CounterMetricFamily(
                "meter_window_energy_joules",
                "Energy of the finished windows of this name, in joules",
                labels=["window"],
            ),
            CounterMetricFamily(
                "meter_window_co2e_grams",
                "Location-based CO2e of the finished windows of this name, in grams",
                labels=["window"],
            ),
            CounterMetricFamily(
                "meter_window_seconds",
                "Duration of the finished windows of this name, in seconds",
                labels=["window"],
            ),
            CounterMetricFamily(
                "meter_windows", "Finished windows of this name", labels=["window"]
            ),
        )
        energy, co2e, seconds, count = families
        for name, s in stats:
            energy.add_metric([name], max(_finite(s.energy_j), 0.0))
            co2e.add_metric([name], max(_finite(s.co2e_g), 0.0))
            seconds.add_metric([name], max(_finite(s.seconds), 0.0))
            count.add_metric([name], float(s.count))
        return families


def register(
    meter: Meter,
    registry: CollectorRegistry | None = REGISTRY,
    *,
    include_windows: bool = True,
) -> MeterCollector:
    """A `MeterCollector` for ``meter``, registered in ``registry`` (the default registry;
    ``None`` to skip registration). Starts the meter, so the counters begin now.

    >>> import meter
    >>> from meter.exporters.prometheus import register
    >>> register(meter.get_meter())                  # doctest: +SKIP
    """
    collector = MeterCollector(meter, include_windows=include_windows)
    meter.start()
    if registry is not None:
        registry.register(collector)
    return collector


class _Forward:
    """Collect another registry's metrics (e.g. the request metrics the ASGI middleware keeps
    in prometheus_client's default registry) into a registry of meter's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def make_registry(
    meter: Meter,
    *,
    include_windows: bool = True,
    also: CollectorRegistry | None = None,
) -> CollectorRegistry:
    """A fresh registry holding ``meter``'s collector (starts the meter), plus everything in
    ``also`` when given (e.g. ``prometheus_client.REGISTRY``, where
    `meter.integrations.asgi.EnergyMiddleware` registers its request metrics by default)."""
    registry = CollectorRegistry(auto_describe=False)
    register(meter, registry, include_windows=include_windows)
    if also is not None:
        registry.register(_Forward(also))
    return registry

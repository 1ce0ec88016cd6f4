"""OpenTelemetry export: meter's energy, power and CO2e over OTLP/HTTP, beside Prometheus.

Names follow OpenTelemetry's hardware semantic conventions
(https://opentelemetry.io/docs/specs/semconv/hardware/common/, shipped as
``opentelemetry.semconv._incubating.metrics.hw_metrics``): ``hw.energy`` (counter, J) and
``hw.power`` (gauge, W) per component, with ``hw.id`` and ``hw.type`` required and
``hw.name``, ``hw.model``, ``hw.vendor`` recommended; ``hw.host.energy`` / ``hw.host.power``
for the whole host, which a backend must never add to the components' series (they would count
twice). meter's own figures keep the ``meter.`` prefix: ``meter.co2e``,
``meter.grid.carbon_intensity``, ``meter.window.energy``.

As on the Prometheus side (`meter.exporters.prometheus.collector`), an export never reads a
device: the observable instruments' callbacks read each track's published snapshot, the
meter's ``start_state``, its per-name window totals and its accountant. Counters count from the
meter's start and are cumulative (OTLP ``Sum``, monotonic, cumulative temporality).

>>> import meter
>>> from meter.exporters.otlp import start_otlp
>>> handle = start_otlp(meter.get_meter(), "http://collector:4318")   # doctest: +SKIP
>>> handle.close()          # the last export, then shutdown            # doctest: +SKIP

Configuration is OpenTelemetry's own: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/metrics``
appended), ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` (the full URL), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds, default 60000), ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_SERVICE_NAME`` (default ``meter``). Needs the ``otel`` extra:
``pip install 'ai-energy-meter[otel]'``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meter.core import OTHER_WINDOWS
from meter.errors import ConfigError

if TYPE_CHECKING:
    from meter.core import Meter
    from meter.measurement import Measurement

log = logging.getLogger("meter")

INSTALL = "pip install 'ai-energy-meter[otel]' (from a checkout: pip install '.[otel]')"

#: The signal path OTLP/HTTP appends to a base endpoint (OTLP specification, "Endpoint URLs for
#: OTLP/HTTP": https://opentelemetry.io/docs/specs/otel/protocol/exporter/).
METRICS_PATH = "/v1/metrics"

#: Seconds one export may take, retries included, unless OTEL_EXPORTER_OTLP_(METRICS_)TIMEOUT
#: says otherwise (the SDK's default of 10 s would hold the end of a run that long when the
#: collector is down).
DEFAULT_TIMEOUT_S = 5.0

#: Bucket bounds of ``meter.window.energy``, joules: a decade each, from a training step of a
#: small model (~1 J) to a day on an 8-GPU node (~2e8 J). The SDK's default bounds stop at 10 kJ.
WINDOW_BUCKETS_J = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)

#: Every metric exported: name -> (instrument, unit, attributes).
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hw.energy": (
        "counter",
        "J",
        ("hw.id", "hw.type", "hw.name", "hw.model", "hw.vendor", "meter.method"),
    ),
    "hw.power": (
        "gauge",
        "W",
        ("hw.id", "hw.type", "hw.name", "hw.model", "hw.vendor", "meter.method"),
    ),
    "hw.host.energy": ("counter", "J", ()),
    "hw.host.power": ("gauge", "W", ()),
    "meter.co2e": ("counter", "g", ("hw.id", "meter.accounting")),
    "meter.grid.carbon_intensity": ("gauge", "g/kWh", ("meter.zone", "meter.source")),
    "meter.window.energy": ("histogram", "J", ("meter.window",)),
    "meter.request.energy": (
        "histogram",
        "J",
        ("http.route", "http.request.method", "meter.status_class"),
    ),
}

#: DeviceInfo.kind -> hw.type (semantic conventions' values: gpu, cpu, memory, ...). RAPL's psys
#: domain is the whole platform (package + DRAM + the rest of the SoC): a ``system`` reading.
HW_TYPES = {"gpu": "gpu", "cpu": "cpu", "dram": "memory", "psys": "system"}

# The SDK's own loggers: what they say about a failed export is replaced by one warning of
# ours (`_Exporter`), so a run with the collector down prints one line, not a traceback per
# interval. Other SDK messages stay visible.
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk.metrics._internal.export",
)


def require() -> None:
    """Raise `ConfigError` with the install command when the ``otel`` extra is missing."""
    try:
        import opentelemetry.exporter.otlp.proto.http.metric_exporter
        import opentelemetry.sdk.metrics  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"OpenTelemetry export needs the otel extra ({exc.name or exc} is missing): {INSTALL}",
            setting="otlp",
        ) from None


def metrics_url(endpoint: str) -> str:
    """The OTLP/HTTP metrics URL for ``endpoint``: a base URL (``http://collector:4318``, or one
    with a path prefix) gets ``/v1/metrics`` appended, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` does;
    a URL already ending in ``/v1/metrics`` is kept.

    >>> metrics_url("http://collector:4318")
    'http://collector:4318/v1/metrics'
    >>> metrics_url("https://otel.example/prefix/v1/metrics")
    'https://otel.example/prefix/v1/metrics'
    """
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"OTLP endpoint {endpoint!r} is not an http(s) URL; give one such as "
            "http://collector:4318 (OTLP/HTTP's port)",
            setting="otlp",
        )
    path = parts.path.rstrip("/")
    if not path.endswith(METRICS_PATH):
        path += METRICS_PATH
    return urllib.parse.urlunsplit(parts._replace(path=path))


def _finite(value: float) -> float:
    return max(value, 0.0) if math.isfinite(value) else 0.0


def _vendor(kind: str, model: str) -> str | None:
    """The device's maker where meter knows it: GPUs come through NVML (NVIDIA's library); a
    CPU's maker when its model string names it."""
    if kind == "gpu":
        return "NVIDIA"
    lowered = model.lower()
    for word, vendor in (("intel", "Intel"), ("amd", "AMD"), ("arm", "ARM")):
        if word in lowered.split() or lowered.startswith(word):
            return vendor
    return None


@dataclass(frozen=True)
class DeviceFigures:
    """One device's exported figures, read from published state."""

    attributes: Mapping[str, str]
    key: str
    counted: bool
    energy_j: float
    power_w: float | None
    co2e_g: Mapping[str, float]


def device_figures(meter: Meter) -> list[DeviceFigures]:
    """Per started device: joules since the meter started, latest watts (None while it cannot
    be read) and CO2e per accounting, from the tracks' snapshots (no device read)."""
    if meter.started_at is None:
        return []
    accountant = meter.accountant
    market_on = accountant is not None and accountant.market is not None
    base = meter.start_state
    embodied = meter.embodied_co2e_g()
    out = []
    for i, track in enumerate(list(meter.ledger.tracks)):
        if i >= len(base):
            continue
        info = track.info
        snap = track.snapshot()
        e0, g0, m0 = base[i]
        used = snap.energy_j - e0
        watts: float | None = snap.power_w
        correction = meter.corrections[i] if i < len(meter.corrections) else None
        if correction is not None:  # asked for with gpu_correction; noted on the device
            elapsed = (snap.t or 0.0) - (meter.started_at or 0.0)
            used = correction.energy_j(used, elapsed)
            watts = correction.power_w(snap.power_w)
        if snap.error is not None or snap.unreadable_since is not None:
            watts = None
        co2e: dict[str, float] = {}
        if accountant is not None:
            co2e["location"] = _finite(snap.co2e_g - g0)
            if market_on:
                co2e["market"] = _finite(snap.co2e_market_g - m0)
        if info.key in embodied:
            co2e["embodied"] = _finite(embodied[info.key])
        attributes = {
            "hw.id": info.key,
            "hw.type": HW_TYPES.get(info.kind, info.kind),
            "hw.name": f"{info.key} {info.model}".strip(),
            "meter.method": info.method,
        }
        if info.model:
            attributes["hw.model"] = info.model
        vendor = _vendor(info.kind, info.model)
        if vendor is not None:
            attributes["hw.vendor"] = vendor
        out.append(
            DeviceFigures(
                attributes=attributes,
                key=info.key,
                counted=info.counted,
                energy_j=_finite(used),
                power_w=None if watts is None else _finite(watts),
                co2e_g=co2e,
            )
        )
    return out


class _Exporter:
    """The SDK's OTLP exporter, with one warning of ours per outage instead of its log lines.

    The first failed export warns (logger ``meter``) with the endpoint and how to check it;
    later failures stay quiet until an export succeeds again (then one info line). Nothing is
    raised into the reader's thread or the run."""

    def __init__(self, inner: Any, url: str) -> None:
        self.inner = inner
        self.url = url
        self.exports = 0
        self.failures = 0
        self.failing = False
        self.last_ok: bool | None = None
        self._lock = threading.Lock()
        # The reader takes its temporality and aggregation preferences from the exporter.
        self._preferred_temporality = inner._preferred_temporality
        self._preferred_aggregation = inner._preferred_aggregation

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        from opentelemetry.sdk.metrics.export import MetricExportResult

        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # the SDK's own errors must not reach its reader's thread
            log.debug("meter: OTLP export raised", exc_info=True)
            result, why = MetricExportResult.FAILURE, str(exc)
        else:
            why = ""
        ok = result == MetricExportResult.SUCCESS
        with self._lock:
            self.exports += 1
            self.last_ok = ok
            if ok:
                if self.failing:
                    log.info("meter: OTLP export to %s works again", self.url)
                self.failing = False
            else:
                self.failures += 1
                if not self.failing:
                    self.failing = True
                    log.warning(
                        "meter: could not export metrics to the OTLP endpoint %s%s; is an "
                        "OpenTelemetry collector listening there (OTLP/HTTP, port 4318 by "
                        "default)? The run goes on; this is said once per outage.",
                        self.url,
                        f" ({why})" if why else "",
                    )
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _Quiet(logging.Filter):
    """Drops the SDK's records about failed exports while an `OtlpExporter` runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def _resource(attributes: Mapping[str, str] | None) -> Any:
    from opentelemetry.sdk.resources import Resource

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; without either
    # naming the service, it is "meter" (the SDK's default is "unknown_service").
    env_names = "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    base: dict[str, str] = {}
    if not os.environ.get("OTEL_SERVICE_NAME") and not env_names:
        base["service.name"] = "meter"
    base.update(attributes or {})
    return Resource.create(base)


def _request_histogram(otel: Any) -> Callable[[Any], None] | None:
    """``meter.request.energy`` (histogram, J) fed by every ASGI `EnergyMiddleware` of this
    process, with the Prometheus side's route cap; None when the ASGI integration cannot be
    imported (Starlette is not needed for it, but be safe)."""
    try:
        from meter.integrations.asgi.metrics import REQUEST_OBSERVERS, RouteCap
    except Exception:  # pragma: no cover - the integration ships with meter
        return None
    histogram = otel.create_histogram(
        "meter.request.energy",
        unit="J",
        description="Each HTTP request's share of the device energy (ASGI middleware), by "
        "route template (beyond the first 100 routes: other), method and status class",
    )
    cap = RouteCap()

    def observe(request: Any) -> None:
        histogram.record(
            _finite(request.energy_j),
            {
                "http.route": cap(request.route),
                "http.request.method": request.method,
                "meter.status_class": request.status_class,
            },
        )

    REQUEST_OBSERVERS.append(observe)
    return observe


def _forget_observer(observer: Callable[[Any], None] | None) -> None:
    if observer is None:
        return
    from meter.integrations.asgi.metrics import REQUEST_OBSERVERS

    with contextlib.suppress(ValueError):
        REQUEST_OBSERVERS.remove(observer)


class OtlpExporter:
    """A running OTLP export of one meter: a periodic reader that exports every ``interval_s``
    and once more at `close`. Made by `start_otlp`."""

    def __init__(
        self,
        meter: Meter,
        endpoint: str | None = None,
        *,
        interval_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        resource_attributes: Mapping[str, str] | None = None,
        include_windows: bool = True,
    ) -> None:
        require()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

        self.meter = meter
        url = metrics_url(endpoint) if endpoint else None
        if timeout_s is None and not (
            os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT")
        ):
            timeout_s = DEFAULT_TIMEOUT_S
        if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
            raise ConfigError(
                f"interval_s must be a positive number of seconds, got {interval_s!r}",
                setting="interval_s",
            )
        inner = OTLPMetricExporter(
            endpoint=url, headers=dict(headers) if headers else None, timeout=timeout_s
        )
        self.url: str = inner._endpoint  # the SDK resolved the variables: say where it goes
        self._exporter = _Exporter(inner, self.url)
        self._quiet = _Quiet()
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)
        meter.start()
        reader = PeriodicExportingMetricReader(
            self._exporter,  # type: ignore[arg-type]  # a MetricExporter by registration
            export_interval_millis=None if interval_s is None else interval_s * 1000.0,
        )
        self.interval_s: float = reader._export_interval_millis / 1000.0
        self._provider = MeterProvider(
            metric_readers=[reader],
            views=[
                View(
                    instrument_name="meter.window.energy",
                    aggregation=ExplicitBucketHistogramAggregation(WINDOW_BUCKETS_J),
                )
            ],
            resource=_resource(resource_attributes),
            shutdown_on_exit=False,
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._instruments(include_windows)

    # -- instruments -------------------------------------------------------------------------

    def _instruments(self, include_windows: bool) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        from meter import __version__

        otel = self._provider.get_meter("meter", __version__)
        meter = self.meter

        def energy(options: CallbackOptions) -> Iterator[Observation]:
            # Asynchronous callbacks run before any instrument is collected: the windows
            # closed since the last export are settled (and recorded in meter.window.energy)
            # here, in time for this export.
            meter.settle_windows()
            for d in device_figures(meter):
                yield Observation(d.energy_j, dict(d.attributes))

        def power(options: CallbackOptions) -> Iterator[Observation]:
            for d in device_figures(meter):
                if d.power_w is not None:
                    yield Observation(d.power_w, dict(d.attributes))

        def host_energy(options: CallbackOptions) -> Iterable[Observation]:
            figures = [d for d in device_figures(meter) if d.counted]
            return [Observation(sum(d.energy_j for d in figures))] if figures else []

        def host_power(options: CallbackOptions) -> Iterable[Observation]:
            figures = [d for d in device_figures(meter) if d.counted and d.power_w is not None]
            return [Observation(sum(d.power_w or 0.0 for d in figures))] if figures else []

        def co2e(options: CallbackOptions) -> Iterator[Observation]:
            for d in device_figures(meter):
                for accounting, grams in d.co2e_g.items():
                    yield Observation(grams, {"hw.id": d.key, "meter.accounting": accounting})

        def intensity(options: CallbackOptions) -> Iterable[Observation]:
            accountant = meter.accountant
            current = accountant.current if accountant is not None else None
            if accountant is None or current is None:
                return []
            return [
                Observation(
                    current.g_per_kwh,
                    {"meter.zone": accountant.zone.key, "meter.source": current.source},
                )
            ]

        otel.create_observable_counter(
            "hw.energy",
            [energy],
            unit="J",
            description="Energy used by the component since the meter started",
        )
        otel.create_observable_gauge(
            "hw.power", [power], unit="W", description="Latest power of the component"
        )
        otel.create_observable_counter(
            "hw.host.energy",
            [host_energy],
            unit="J",
            description="Energy of the host's metered components since the meter started "
            "(their sum: never add it to hw.energy)",
        )
        otel.create_observable_gauge(
            "hw.host.power",
            [host_power],
            unit="W",
            description="Power of the host's metered components (their sum)",
        )
        otel.create_observable_counter(
            "meter.co2e",
            [co2e],
            unit="g",
            description="CO2e of the component since the meter started: location-based, "
            "market-based and embodied (meter.accounting)",
        )
        otel.create_observable_gauge(
            "meter.grid.carbon_intensity",
            [intensity],
            unit="g/kWh",
            description="Grid carbon intensity in force, gCO2e/kWh (before PUE)",
        )
        self._request_observer = _request_histogram(otel)
        if not include_windows:
            return
        histogram = otel.create_histogram(
            "meter.window.energy",
            unit="J",
            description="Energy of each finished window, by window name (beyond the meter's "
            "max_windows names: other)",
        )

        def record(m: Measurement) -> None:
            # The per-name totals have just taken this window: its name there, or `other`.
            name = m.name if m.name in meter.window_stats else OTHER_WINDOWS
            histogram.record(_finite(m.energy_j), {"meter.window": name})

        self._record = record
        meter.settled_sinks.append(record)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def exports(self) -> int:
        """Exports attempted so far."""
        return self._exporter.exports

    @property
    def failures(self) -> int:
        """Exports that failed so far."""
        return self._exporter.failures

    @property
    def last_ok(self) -> bool | None:
        """Whether the latest export reached the endpoint (None before the first)."""
        return self._exporter.last_ok

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export now (outside the interval)."""
        return bool(self._provider.force_flush(timeout_millis=timeout_s * 1000.0))

    def close(self) -> bool:
        """The last export (of the state published now: call ``meter.refresh()`` first for the
        latest figures), then shut the exporter down. Idempotent; never raises. True when the
        last export reached the endpoint."""
        with self._close_lock:
            if self._closed:
                return bool(self._exporter.last_ok)
            self._closed = True
        try:
            # MeterProvider.shutdown stops the reader, whose thread collects and exports one
            # last time before it ends (PeriodicExportingMetricReader._ticker): no force_flush
            # before it, which would send the same figures twice (and, with the collector
            # down, wait out the retries twice).
            self._provider.shutdown()
        except Exception:
            log.debug("meter: OTLP shutdown failed", exc_info=True)
        finally:
            record = getattr(self, "_record", None)
            if record is not None and record in self.meter.settled_sinks:
                self.meter.settled_sinks.remove(record)
            _forget_observer(getattr(self, "_request_observer", None))
            for name in _SDK_LOGGERS:
                logging.getLogger(name).removeFilter(self._quiet)
        return bool(self._exporter.last_ok)

    def __enter__(self) -> OtlpExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_otlp(
    meter: Meter,
    endpoint: str | None = None,
    *,
    interval_s: float | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    include_windows: bool = True,
) -> OtlpExporter:
    """Export ``meter`` over OTLP/HTTP every ``interval_s`` (default
    ``OTEL_METRIC_EXPORT_INTERVAL``, 60 s) and at `OtlpExporter.close`. Starts the meter.

    ``endpoint``: a base URL (``/v1/metrics`` is appended) or the full metrics URL; None lets
    ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` decide (default
    ``http://localhost:4318/v1/metrics``). ``headers`` add to ``OTEL_EXPORTER_OTLP_HEADERS``'s
    (e.g. an API key). An endpoint that cannot be reached gives one warning (logger
    ``meter``), never an exception. Raises `ConfigError` without the ``otel`` extra.

    >>> import meter
    >>> handle = start_otlp(meter.get_meter(), "http://127.0.0.1:4318")  # doctest: +SKIP
    >>> with handle:                                                  # doctest: +SKIP
    ...     train()
    """
    return OtlpExporter(
        meter,
        endpoint,
        interval_s=interval_s,
        headers=headers,
        timeout_s=timeout_s,
        resource_attributes=resource_attributes,
        include_windows=include_windows,
    )


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "HW_TYPES",
    "INSTALL",
    "METRICS",
    "WINDOW_BUCKETS_J",
    "DeviceFigures",
    "OtlpExporter",
    "device_figures",
    "metrics_url",
    "require",
    "start_otlp",
]

"""`RequestMetrics`: the middleware's Prometheus families, with bounded label values.

Metrics (names and labels are a contract with the shipped Grafana dashboard):

* ``meter_request_energy_joules`` (histogram): each request's share of the device energy;
* ``meter_request_co2e_grams_total`` (counter): its location-based CO2e;
* ``meter_requests_total`` (counter): metered requests;
* ``meter_output_tokens_total`` (counter): output tokens reported in ``usage``;

all labelled ``route``, ``method`` and ``status``. ``method`` and ``status`` are bounded by
construction (`meter.integrations.asgi.measurement`); ``route`` is a route template, and the
first `DEFAULT_MAX_ROUTES` distinct templates keep their label, later ones count as ``other``,
so the series count stays bounded whatever URLs clients send.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from meter.integrations.asgi.measurement import OTHER, UNMATCHED, RequestMeasurement
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from meter import ConfigError

__all__ = [
    "DEFAULT_BUCKETS_J",
    "DEFAULT_MAX_ROUTES",
    "LABELS",
    "MAX_ROUTE_LENGTH",
    "REQUEST_OBSERVERS",
    "RequestMetrics",
    "RouteCap",
]

#: Distinct ``route`` label values kept per registry; further routes are counted as `OTHER`.
DEFAULT_MAX_ROUTES = 100

#: Callables every middleware of this process calls with each finished request's
#: `RequestMeasurement` (other exporters, such as OTLP, add theirs here). Called on the
#: request's path: they must be cheap and must not raise (a failure is logged and skipped).
REQUEST_OBSERVERS: list[Callable[[RequestMeasurement], None]] = []


class RouteCap:
    """The first ``max_routes`` distinct routes keep their value, later ones are `OTHER`
    (`UNMATCHED` stays): the cap of the Prometheus ``route`` label, for other exporters.

    >>> cap = RouteCap(2)
    >>> [cap(r) for r in ("/a", "/b", "/c", "/a", UNMATCHED)]
    ['/a', '/b', 'other', '/a', 'unmatched']
    """

    def __init__(self, max_routes: int = DEFAULT_MAX_ROUTES) -> None:
        self.max_routes = _check_max_routes(max_routes)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, route: str) -> str:
        if route in self._seen or route in (UNMATCHED, OTHER):
            return route
        with self._lock:
            if len(self._seen) < self.max_routes:
                self._seen.add(route)
                return route
        return OTHER


#: Histogram buckets of ``meter_request_energy_joules``: 10 mJ to 10 kJ, about 2.5x apart
#: (a short request on a shared GPU is well under 1 J; a long generation alone on 8 GPUs can
#: reach kJ).
DEFAULT_BUCKETS_J: tuple[float, ...] = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0),
)
#: A route label longer than this is counted as `OTHER`.
MAX_ROUTE_LENGTH = 200
#: The labels of every request metric.
LABELS = ("route", "method", "status")


class _Series(NamedTuple):
    """The children of one label set: what `RequestMetrics.observe` updates."""

    energy: Any
    requests: Any
    co2e: Any


_shared: weakref.WeakKeyDictionary[CollectorRegistry, RequestMetrics] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def _check_max_routes(max_routes: object) -> int:
    if isinstance(max_routes, bool) or not isinstance(max_routes, int) or max_routes < 1:
        raise ConfigError(
            f"max_routes must be a whole number of routes >= 1, got {max_routes!r}; e.g. 100 "
            "(requests beyond that many distinct routes are counted as route='other')",
            setting="max_routes",
        )
    return max_routes


def _check_buckets(buckets: Any) -> tuple[float, ...]:
    problem = None
    values: tuple[float, ...] = ()
    try:
        values = tuple(float(b) for b in buckets)
    except (TypeError, ValueError):
        problem = "is not a sequence of numbers"
    if problem is None:
        if not values:
            problem = "is empty"
        elif any(not math.isfinite(b) or b <= 0 for b in values):
            problem = "holds a value that is not a finite number of joules > 0"
        elif any(b >= c for b, c in itertools.pairwise(values)):
            problem = "is not strictly increasing"
    if problem is not None:
        raise ConfigError(
            f"buckets={buckets!r} {problem}; give increasing upper bounds in joules, e.g. "
            "(0.1, 1, 10, 100) (+Inf is added)",
            setting="buckets",
        )
    return values


class RequestMetrics:
    """The middleware's Prometheus metrics, registered in ``registry``.

    One object per registry: the middleware gets it with `RequestMetrics.shared`, so that
    several middlewares (several apps, or tests) share the series instead of failing with a
    duplicate registration. They are prometheus_client ``Histogram``/``Counter`` objects, so
    they also work in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, as
    vLLM sets it with several API server processes). ``registry=None`` keeps them unregistered.

    ``max_routes`` caps the distinct ``route`` label values (the first ``max_routes`` routes
    seen keep their label, later ones count as ``other``); with the bounded ``method`` (9
    standard methods and ``other``) and ``status`` (``1xx``..``5xx``) labels the series count
    stays bounded whatever URLs clients send.

    >>> from prometheus_client import CollectorRegistry
    >>> metrics = RequestMetrics(CollectorRegistry(), max_routes=2)
    >>> [metrics.route_label(r) for r in ("/a", "/b", "/c", None)]
    ['/a', '/b', 'other', 'unmatched']
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_routes: int = DEFAULT_MAX_ROUTES,
        buckets: Sequence[float] = DEFAULT_BUCKETS_J,
    ) -> None:
        self.max_routes = _check_max_routes(max_routes)
        self.buckets = _check_buckets(buckets)
        self.registry = registry
        created: list[Any] = []
        try:
            self.energy = Histogram(
                "meter_request_energy_joules",
                "Energy of each HTTP request, in joules: its share of the device energy while "
                "it was in flight, split equally among the requests in flight",
                LABELS,
                registry=registry,
                buckets=self.buckets,
            )
            created.append(self.energy)
            self.co2e = Counter(
                "meter_request_co2e_grams",
                "Location-based CO2e of the HTTP requests, in grams",
                LABELS,
                registry=registry,
            )
            created.append(self.co2e)
            self.requests = Counter(
                "meter_requests", "Metered HTTP requests", LABELS, registry=registry
            )
            created.append(self.requests)
            self.output_tokens = Counter(
                "meter_output_tokens",
                "Output tokens reported in the responses' OpenAI-style usage "
                "(completion_tokens or output_tokens)",
                LABELS,
                registry=registry,
            )
        except ValueError as exc:  # prometheus_client: "Duplicated timeseries in registry"
            if registry is not None:
                for metric in created:
                    registry.unregister(metric)
            raise ConfigError(
                f"cannot register the request metrics: {exc}. Another object already "
                "registered meter_request_* metrics in this registry; create the middleware "
                "with the same registry and options (it reuses RequestMetrics.shared), or give "
                "it another registry",
                setting="registry",
            ) from None
        self._lock = threading.Lock()
        self._routes: set[str] = set()
        self._children: dict[tuple[str, str, str], _Series] = {}
        self._token_children: dict[tuple[str, str, str], Any] = {}

    @classmethod
    def shared(
        cls,
        registry: CollectorRegistry,
        *,
        max_routes: int = DEFAULT_MAX_ROUTES,
        buckets: Sequence[float] = DEFAULT_BUCKETS_J,
    ) -> RequestMetrics:
        """The `RequestMetrics` of ``registry``, created on first use. Asking again with other
        options is a `ConfigError` (the series exist already)."""
        max_routes = _check_max_routes(max_routes)
        wanted = _check_buckets(buckets)
        with _shared_lock:
            metrics = _shared.get(registry)
            if metrics is None:
                metrics = _shared[registry] = cls(registry, max_routes=max_routes, buckets=wanted)
            elif metrics.max_routes != max_routes or metrics.buckets != wanted:
                raise ConfigError(
                    "the request metrics of this registry already exist with "
                    f"max_routes={metrics.max_routes} and buckets={metrics.buckets}; give every "
                    "middleware on one registry the same max_routes and buckets, or give them "
                    "different registries",
                    setting="registry",
                )
            return metrics

    @property
    def routes(self) -> frozenset[str]:
        """The route label values admitted so far (`UNMATCHED` and `OTHER` aside)."""
        with self._lock:
            return frozenset(self._routes)

    def route_label(self, route: str | None) -> str:
        """The ``route`` label for a route template (None: no route matched)."""
        if route is None:
            return UNMATCHED
        if route in self._routes:
            return route
        if len(route) > MAX_ROUTE_LENGTH:
            return OTHER
        with self._lock:
            if route in self._routes:
                return route
            if len(self._routes) >= self.max_routes:
                return OTHER
            self._routes.add(route)
            return route

    def observe(self, request: RequestMeasurement) -> None:
        """Count one finished request."""
        key = (request.route, request.method, request.status_class)
        series = self._children.get(key)
        if series is None:
            series = self._children[key] = _Series(
                energy=self.energy.labels(*key),
                requests=self.requests.labels(*key),
                co2e=self.co2e.labels(*key),
            )
        series.energy.observe(max(request.energy_j, 0.0))
        series.requests.inc()
        if request.co2e_g is not None:
            series.co2e.inc(max(request.co2e_g, 0.0))
        if request.output_tokens is not None:
            tokens = self._token_children.get(key)
            if tokens is None:
                tokens = self._token_children[key] = self.output_tokens.labels(*key)
            tokens.inc(request.output_tokens)

    def unregister(self) -> None:
        """Remove these metrics from their registry (and forget them as its shared metrics)."""
        with _shared_lock:
            registry = self.registry
            if registry is None:
                return
            if _shared.get(registry) is self:
                del _shared[registry]
            for metric in (self.energy, self.co2e, self.requests, self.output_tokens):
                with contextlib.suppress(KeyError):  # already unregistered by hand
                    registry.unregister(metric)
            self.registry = None

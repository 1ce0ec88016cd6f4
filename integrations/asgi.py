"""`EnergyMiddleware`: energy per HTTP request and per output token for any ASGI app.

Wrap an app (FastAPI, Starlette, vLLM's OpenAI server, any ASGI callable) and every HTTP
request becomes a shared window of one group of the meter: energy spent while several requests
are in flight is split equally among them, so the requests' shares add up to the device energy
spent while any request was in flight. Output tokens are read from OpenAI-compatible ``usage``
objects (a JSON body, or the final chunk of a ``text/event-stream`` response), and each request
is counted in Prometheus metrics labelled by route template, method and status class.

>>> from fastapi import FastAPI                                  # doctest: +SKIP
>>> from meter.integrations.asgi import EnergyMiddleware               # doctest: +SKIP
>>> app = FastAPI()                                              # doctest: +SKIP
>>> app.add_middleware(EnergyMiddleware)                         # doctest: +SKIP

vLLM: ``vllm serve MODEL --middleware meter.integrations.asgi.EnergyMiddleware`` (vLLM passes only
``app``, so the defaults apply: the process default meter, metrics in prometheus_client's
default registry, which vLLM's ``/metrics`` serves).

The request path makes no device call and waits on nothing slow: a window opens and closes on
the sampler's latest figures (``read_devices=False``, no CUDA synchronisation), and the meter is
started off the event loop (at the ASGI lifespan startup, or in a thread on the first request;
requests that arrive before it has started are passed through unmetered). Metering never breaks
the server: an error in the middleware's own code is logged and the request goes on unmetered;
the app's exceptions propagate unchanged. Non-HTTP scopes (lifespan, websocket) pass straight
through.

Metrics (names and labels are a contract with the shipped Grafana dashboard):

* ``meter_request_energy_joules`` (histogram): each request's share of the device energy;
* ``meter_request_co2e_grams_total`` (counter): its location-based CO2e;
* ``meter_requests_total`` (counter): metered requests;
* ``meter_output_tokens_total`` (counter): output tokens reported in ``usage``;

all labelled ``route`` (the route template such as ``/v1/chat/completions`` or
``/items/{item_id}``, from ``scope["route"]``, never the raw path; inside a mounted app that has
no route object, the mount's path as requested; ``unmatched`` when no route matched, e.g. the
router's 404s; ``other`` beyond the cap of distinct routes), ``method`` (``GET``, ``POST``, ...;
``other`` for non-standard methods) and ``status`` (``2xx``, ``4xx``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from meter import ConfigError, Measurement, Meter, Window, get_meter

__all__ = [
    "DEFAULT_BUCKETS_J",
    "DEFAULT_GROUP",
    "DEFAULT_MAX_ROUTES",
    "OTHER",
    "UNMATCHED",
    "EnergyMiddleware",
    "RequestMeasurement",
    "RequestMetrics",
]

log = logging.getLogger("meter")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``on_measurement(scope, result)``: called once per metered request, on the event loop.
MeasurementHook = Callable[[Scope, "RequestMeasurement"], None]

#: The meter group (and window name) of the requests: they share the devices' energy.
DEFAULT_GROUP = "http"
#: Distinct ``route`` label values kept per registry; further routes are counted as `OTHER`.
DEFAULT_MAX_ROUTES = 100
#: Histogram buckets of ``meter_request_energy_joules``: 10 mJ to 10 kJ, about 2.5x apart
#: (a short request on a shared GPU is well under 1 J; a long generation alone on 8 GPUs can
#: reach kJ).
DEFAULT_BUCKETS_J: tuple[float, ...] = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0),
)
#: ``route`` label of a request no route matched (a 404 of the router, a slash redirect, an
#: app without a router).
UNMATCHED = "unmatched"
#: ``route`` label once the cap of distinct routes is reached (or for an absurdly long route),
#: and ``method`` label of a non-standard HTTP method.
OTHER = "other"
#: A route label longer than this is counted as `OTHER`.
MAX_ROUTE_LENGTH = 200

_LABELS = ("route", "method", "status")
_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)
_STATUS_CLASSES = {c: f"{c}xx" for c in range(1, 6)}
# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

# Output tokens: ``"completion_tokens": N`` (OpenAI chat and completions ``usage``) or
# ``"output_tokens": N`` (the Responses API), as a key of the JSON itself: the same text inside
# a JSON string has its quotes escaped (\").
_TOKENS_KEY = b'_tokens"'
_TOKENS_NAMES = (b'"completion', b'"output')
_TOKENS_VALUE = re.compile(rb"\s*:\s*(\d{1,15})")
# Bytes of one body chunk kept to find a usage key cut in two by a chunk boundary.
_OVERLAP = 64


def _last_tokens(data: bytes) -> int | None:
    """The value of the last output-token key in ``data``, if any: found backwards from the end
    with ``rfind`` (a byte search), so a body without one costs one pass at memchr speed."""
    end = len(data)
    while (i := data.rfind(_TOKENS_KEY, 0, end)) >= 0:
        for name in _TOKENS_NAMES:
            start = i - len(name)
            if start >= 0 and data.startswith(name, start) and data[start - 1 : start] != b"\\":
                match = _TOKENS_VALUE.match(data, i + len(_TOKENS_KEY))
                if match is not None:
                    return int(match.group(1))
        end = i + len(_TOKENS_KEY) - 1  # look before this occurrence
    return None


def _status_class(status: int | None) -> str:
    """``2xx`` for 200..299 and so on. No response at all (the app raised or returned without
    one) counts as ``5xx``: the server answers 500 then."""
    if status is None:
        return "5xx"
    return _STATUS_CLASSES.get(status // 100, OTHER)


@dataclass(frozen=True)
class RequestMeasurement:
    """One metered request: what ``on_measurement`` receives, and what the app finds in
    ``request.state.meter_request`` (``scope["state"]["meter_request"]``) once the response
    body has been sent (in a background task, say).

    ``route``, ``method`` and ``status_class`` are the metric labels; ``status`` is the HTTP
    status (None when the app sent no response); ``output_tokens`` the last
    ``completion_tokens`` / ``output_tokens`` of an OpenAI-style ``usage`` in the response
    (None when there was none); ``streamed`` whether the body came in several messages;
    ``measurement`` the request's `meter.Measurement` (its fair share of the devices).
    """

    route: str
    method: str
    status: int | None
    output_tokens: int | None
    streamed: bool
    measurement: Measurement

    @property
    def status_class(self) -> str:
        return _status_class(self.status)

    @property
    def energy_j(self) -> float:
        return self.measurement.energy_j

    @property
    def energy_per_output_token_j(self) -> float | None:
        """Joules per output token, when the response reported output tokens."""
        if not self.output_tokens:
            return None
        return self.measurement.energy_j / self.output_tokens


# -- metrics ------------------------------------------------------------------------------------

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
                _LABELS,
                registry=registry,
                buckets=self.buckets,
            )
            created.append(self.energy)
            self.co2e = Counter(
                "meter_request_co2e_grams",
                "Location-based CO2e of the HTTP requests, in grams",
                _LABELS,
                registry=registry,
            )
            created.append(self.co2e)
            self.requests = Counter(
                "meter_requests", "Metered HTTP requests", _LABELS, registry=registry
            )
            created.append(self.requests)
            self.output_tokens = Counter(
                "meter_output_tokens",
                "Output tokens reported in the responses' OpenAI-style usage "
                "(completion_tokens or output_tokens)",
                _LABELS,
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
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
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
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.energy.labels(*key),
                self.requests.labels(*key),
                self.co2e.labels(*key),
            )
        energy, requests, co2e = children
        m = request.measurement
        energy.observe(max(m.energy_j, 0.0))
        requests.inc()
        if m.co2e_g is not None:
            co2e.inc(max(m.co2e_g, 0.0))
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


# -- the middleware -----------------------------------------------------------------------------


class EnergyMiddleware:
    """ASGI middleware: each HTTP request is a shared window of the meter's ``group``.

    >>> from fastapi import FastAPI                                    # doctest: +SKIP
    >>> app = FastAPI()                                                # doctest: +SKIP
    >>> app.add_middleware(EnergyMiddleware, energy_header="x-energy-joules")  # doctest: +SKIP

    Every argument but ``app`` is optional (vLLM's ``--middleware`` passes only ``app``):

    * ``meter``: the `meter.Meter` (default: ``meter.get_meter()``, the process default,
      configured by the ``METER_*`` variables). It is started at the ASGI lifespan startup, off
      the event loop.
    * ``group``: the meter group of the requests (default ``"http"``, also the windows' name, so
      ``meter_window_*{window="http"}`` totals them too). Middlewares on one meter with the same
      group split the devices among all their requests.
    * ``registry``: the prometheus_client registry of the request metrics (default: the global
      ``REGISTRY``); ``None``: no metrics. ``max_routes`` and ``buckets``: see `RequestMetrics`.
    * ``energy_header``: a response header name, e.g. ``"x-energy-joules"``, carrying the
      request's joules; off by default. Only non-streaming responses (a ``content-length``
      header and the whole body in one message) get it: their headers are held until the body
      is ready, which costs nothing as the body follows at once. Streamed responses are not
      held back and do not get the header.
    * ``on_measurement``: ``callable(scope, RequestMeasurement)``, called on the event loop when
      a request's window closes (keep it quick; an exception in it is logged).
    * ``route_of``: ``callable(scope) -> str | None``, the route template of a request, for
      apps without a Starlette router (the default reads ``scope["route"]``, set by Starlette
      and FastAPI once routing matched).
    * ``exclude_paths``: exact request paths passed through unmetered and uncounted, e.g.
      ``("/health", "/metrics")``.

    A request's window opens when the request reaches the middleware and closes when the app
    sends the last body message (before it goes out), so background tasks run after it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        meter: Meter | None = None,
        group: str = DEFAULT_GROUP,
        registry: CollectorRegistry | None = REGISTRY,
        max_routes: int = DEFAULT_MAX_ROUTES,
        buckets: Sequence[float] = DEFAULT_BUCKETS_J,
        energy_header: str | None = None,
        on_measurement: MeasurementHook | None = None,
        route_of: Callable[[Scope], str | None] | None = None,
        exclude_paths: Collection[str] = (),
    ) -> None:
        if not callable(app):
            raise ConfigError(
                f"app must be an ASGI application (an async callable), got {app!r}",
                setting="app",
            )
        if meter is not None and not isinstance(meter, Meter):
            raise ConfigError(
                f"meter must be a meter.Meter, got {meter!r}; leave it out to use "
                "meter.get_meter()",
                setting="meter",
            )
        if not isinstance(group, str) or not group.strip():
            raise ConfigError(
                f"group must be a non-empty name, got {group!r}; e.g. 'http'", setting="group"
            )
        header: bytes | None = None
        if energy_header is not None:
            if not isinstance(energy_header, str) or not _HEADER_NAME.match(energy_header):
                raise ConfigError(
                    f"energy_header={energy_header!r} is not a valid HTTP header name; use "
                    "letters, digits and '-', e.g. 'x-energy-joules' (or None for no header)",
                    setting="energy_header",
                )
            header = energy_header.lower().encode("ascii")
        for name, fn in (("on_measurement", on_measurement), ("route_of", route_of)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be callable or None, got {fn!r}", setting=name)
        if isinstance(exclude_paths, (str, bytes)) or not all(
            isinstance(p, str) and p.startswith("/") for p in exclude_paths
        ):
            raise ConfigError(
                f"exclude_paths must be a collection of paths starting with '/', got "
                f"{exclude_paths!r}; e.g. ('/health', '/metrics')",
                setting="exclude_paths",
            )
        self.metrics = (
            None
            if registry is None
            else RequestMetrics.shared(registry, max_routes=max_routes, buckets=buckets)
        )
        self.app = app
        self.meter = meter if meter is not None else get_meter()
        self.group = group
        self.energy_header = header
        self.on_measurement = on_measurement
        self.route_of = route_of
        self.exclude_paths = frozenset(exclude_paths)
        self._ready = False
        self._starting = False
        self._start_lock = threading.Lock()
        self._warned: set[str] = set()

    # -- entry point ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                receive = self._lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        request = self._open(scope, send)
        if request is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, request.send)
        except BaseException as exc:
            # The app's exception goes on unchanged.
            request.close(type(exc))
            raise
        await request.finish()

    def _open(self, scope: Scope, send: Send) -> _Request | None:
        """A metered request, or None to pass it through (meter not started, excluded path,
        or a metering error)."""
        if not self._ready and not self._check_started():
            return None
        try:
            if self.exclude_paths and scope.get("path") in self.exclude_paths:
                return None
            window = Window(
                self.group, meter=self.meter, group=self.group, sync_cuda=False, read_devices=False
            )
            request = _Request(self, scope, send, window)
            # Last, so that an open window always has its request to close it. Logs and leaves
            # the request unmetered on error.
            window.start()
            return request
        except Exception:
            self._warn("open", "could not open a request window; the request runs unmetered")
            return None

    # -- starting the meter off the event loop -------------------------------------------------

    def _check_started(self) -> bool:
        if self.meter.started_at is not None:
            self._ready = True
            return True
        with self._start_lock:
            if self._starting:
                return False
            self._starting = True
        threading.Thread(target=self._start_meter, name="meter-start", daemon=True).start()
        return False

    def _start_meter(self) -> None:
        try:
            self.meter.start()
        except Exception:
            self._warn("start", "could not start the meter; requests run unmetered")

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup" and self.meter.started_at is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # not asyncio (trio): start here, at startup
                    self._start_meter()
                else:
                    await loop.run_in_executor(None, self._start_meter)
            return message

        return wrapped

    # -- helpers for _Request -------------------------------------------------------------------

    def _route(self, scope: Scope, root_path: str) -> str | None:
        """The request's route template (before the label cap), or None."""
        if self.route_of is not None:
            return self.route_of(scope)
        # Inside a mounted app, route paths are relative to the mount, and what the mounts
        # matched was appended to root_path: the prefix is the mounts' path as requested (so a
        # mount path with parameters gives one label per value, up to the cap).
        now = scope.get("root_path", "")
        prefix = now[len(root_path) :] if len(now) > len(root_path) else ""
        route = scope.get("route")  # FastAPI routes; any route of Starlette >= 1.0
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return prefix or None  # a mount without a route object inside, or no match
        routing = sys.modules.get("starlette.routing")
        if routing is not None and isinstance(route, routing.Mount):
            return prefix or path  # the mount itself answered: root_path ends with its path
        return prefix + path or "/"

    def _warn(self, kind: str, message: str) -> None:
        """Log a metering failure: with its traceback the first time, at debug level after."""
        if kind in self._warned:
            log.debug("meter: %s", message, exc_info=True)
            return
        self._warned.add(kind)
        log.warning(
            "meter: %s (further such errors are logged at debug level)", message, exc_info=True
        )


class _Request:
    """One metered request: wraps ``send`` to watch the response go by."""

    __slots__ = (
        "_send",
        "carry",
        "done",
        "held",
        "middleware",
        "root_path",
        "scan",
        "scope",
        "sse",
        "status",
        "streamed",
        "tokens",
        "window",
    )

    def __init__(
        self, middleware: EnergyMiddleware, scope: Scope, send: Send, window: Window
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.root_path: str = scope.get("root_path", "")
        self._send = send
        self.window = window
        self.status: int | None = None
        self.held: Message | None = None
        self.scan = False
        self.sse = False
        self.carry = b""
        self.tokens: int | None = None
        self.streamed = False
        self.done = False

    async def send(self, message: Message) -> None:
        if not self.done:
            kind = message.get("type")
            if kind == "http.response.start":
                if self._start(message):
                    return  # held back until the body is ready
            elif kind == "http.response.body":
                held = self._body(message)
                if held is not None:
                    await self._send(held)
            else:  # http.response.pathsend, trailers, extensions
                held, self.held = self.held, None
                if held is not None:
                    await self._send(held)
                if kind == "http.response.pathsend":
                    self.close(None)
        await self._send(message)

    async def finish(self) -> None:
        """The app returned: close the window if the response did not (no final body), and let
        out a response start still held back."""
        self.close(None)
        held, self.held = self.held, None
        if held is not None:
            await self._send(held)

    def _start(self, message: Message) -> bool:
        """Note the status and body type; True to hold the message back for the header."""
        try:
            self.status = int(message["status"])
            content_type = b""
            sized = False
            for name, value in message.get("headers") or ():
                name = name.lower()
                if name == b"content-type":
                    content_type = value.lower()
                elif name == b"content-length":
                    sized = True
            self.sse = content_type.startswith(b"text/event-stream")
            self.scan = self.sse or b"json" in content_type
            if self.middleware.energy_header is not None and sized and not self.sse:
                self.held = message
                return True
        except Exception:
            self.middleware._warn("response", "could not read the response start")
        return False

    def _body(self, message: Message) -> Message | None:
        """Watch one body message; at the last one close the window. Returns the held response
        start to send first (with the energy header when the whole body is this message)."""
        more = False
        try:
            more = bool(message.get("more_body", False))
            if self.scan:
                body = message.get("body", b"")
                if body:
                    self._scan(body)
            if more:
                self.streamed = True
        except Exception:
            self.middleware._warn("body", "could not read a response body message")
        held, self.held = self.held, None
        if not more:
            result = self.close(None)
            if held is not None and result is not None:
                try:
                    value = f"{result.measurement.energy_j:.6f}".encode("ascii")
                    header = (self.middleware.energy_header, value)
                    held = {**held, "headers": [*(held.get("headers") or ()), header]}
                except Exception:
                    self.middleware._warn("header", "could not add the energy header")
        return held

    def _scan(self, body: bytes) -> None:
        """Find output tokens in a body chunk without keeping the body: the last usage key
        wins (a stream's final usage chunk, or cumulative usage per chunk)."""
        found = None
        if self.carry:  # a key cut in two by the chunk boundary
            found = _last_tokens(self.carry + body[:_OVERLAP])
        here = _last_tokens(body)
        if here is not None:
            found = here
        if found is not None:
            self.tokens = found
        self.carry = body[-_OVERLAP:]

    def close(self, exc_type: type[BaseException] | None) -> RequestMeasurement | None:
        """Close the window (once) and account the request. Never raises."""
        if self.done:
            return None
        self.done = True
        if exc_type is not None and self.held is not None:
            self.held = None  # the response start never went out: the server answers 500
            self.status = None
        middleware = self.middleware
        try:
            measurement = self.window.stop(exc_type)
            if measurement is None:
                return None
            scope = self.scope
            metrics = middleware.metrics
            route = middleware._route(scope, self.root_path)
            method = scope.get("method", "")
            result = RequestMeasurement(
                route=metrics.route_label(route) if metrics is not None else route or UNMATCHED,
                method=method if method in _METHODS else OTHER,
                status=self.status,
                output_tokens=self.tokens,
                streamed=self.streamed,
                measurement=measurement,
            )
            if metrics is not None:
                metrics.observe(result)
        except Exception:
            middleware._warn("close", "could not account a request")
            return None
        try:  # for the app: request.state.meter_request (Starlette reads scope["state"])
            scope.setdefault("state", {})["meter_request"] = result
        except Exception:
            middleware._warn("state", "could not put the measurement in scope['state']")
        hook = middleware.on_measurement
        if hook is not None:
            try:
                hook(scope, result)
            except Exception:
                middleware._warn("hook", "the on_measurement callback failed")
        return result

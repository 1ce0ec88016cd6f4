"""`EnergyMiddleware`: each HTTP request of an ASGI app is a shared window of the meter.

The request path makes no device call and waits on nothing slow: a window opens and closes on
the sampler's latest figures (``read_devices=False``, no CUDA synchronisation), and the meter is
started off the event loop (at the ASGI lifespan startup, or in a thread on the first request;
requests that arrive before it has started are passed through unmetered). Metering never breaks
the server: an error in the middleware's own code is logged and the request goes on unmetered;
the app's exceptions propagate unchanged. Non-HTTP scopes (lifespan, websocket) pass straight
through.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from typing import Any

from meter.integrations.asgi.measurement import UNMATCHED, RequestMeasurement, method_label
from meter.integrations.asgi.metrics import (
    DEFAULT_BUCKETS_J,
    DEFAULT_MAX_ROUTES,
    REQUEST_OBSERVERS,
    RequestMetrics,
)
from meter.integrations.asgi.routes import RouteStart, RouteTemplates
from meter.integrations.asgi.tokens import OutputTokenScanner, carries_usage
from prometheus_client import REGISTRY, CollectorRegistry

from meter import ConfigError, Meter, Window, get_meter

__all__ = [
    "DEFAULT_EXCLUDE_PATHS",
    "DEFAULT_GROUP",
    "ASGIApp",
    "EnergyMiddleware",
    "MeasurementHook",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

log = logging.getLogger("meter")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``on_measurement(scope, result)``: called once per metered request, on the event loop.
MeasurementHook = Callable[[Scope, RequestMeasurement], None]

#: The meter group (and window name) of the requests: they share the devices' energy.
DEFAULT_GROUP = "http"
#: Paths left unmetered unless told otherwise: Prometheus' scrapes of the app's own metrics
#: (``app.add_route("/metrics", metrics_asgi_app(...))``, vLLM's ``/metrics``, or ``/metrics/``
#: behind a mount) are not requests of the service; metered, they would count as traffic and
#: take a share of the energy.
DEFAULT_EXCLUDE_PATHS: tuple[str, ...] = ("/metrics", "/metrics/")

# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


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
      apps without a Starlette router (the default joins the templates of the Starlette or
      FastAPI routes and mounts that matched, see `meter.integrations.asgi.routes`).
    * ``exclude_paths``: exact request paths passed through unmetered and uncounted (default
      `DEFAULT_EXCLUDE_PATHS`, ``("/metrics", "/metrics/")``: scrapes are not requests); e.g.
      ``("/health", "/metrics")``, or ``()`` to meter every path.

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
        exclude_paths: Collection[str] = DEFAULT_EXCLUDE_PATHS,
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
        self.routes = RouteTemplates(app)
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

    def _route(self, scope: Scope, start: RouteStart) -> str | None:
        """The request's route template (before the label cap), or None."""
        if self.route_of is not None:
            return self.route_of(scope)
        try:
            return self.routes.template(scope, start)
        except Exception:  # an app's routes this code cannot read: count, as unmatched
            self._warn("route", "could not find the route template of a request")
            return None

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
        "done",
        "held",
        "middleware",
        "scanner",
        "scope",
        "sse",
        "start",
        "status",
        "streamed",
        "window",
    )

    def __init__(
        self, middleware: EnergyMiddleware, scope: Scope, send: Send, window: Window
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.start = RouteStart.of(scope)
        self._send = send
        self.window = window
        self.status: int | None = None
        self.held: Message | None = None
        self.scanner: OutputTokenScanner | None = None
        self.sse = False
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
            if carries_usage(content_type):
                self.scanner = OutputTokenScanner()
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
            if self.scanner is not None:
                self.scanner.feed(message.get("body", b""))
            if more:
                self.streamed = True
        except Exception:
            self.middleware._warn("body", "could not read a response body message")
        held, self.held = self.held, None
        if not more:
            result = self.close(None)
            if held is not None and result is not None:
                try:
                    value = f"{result.energy_j:.6f}".encode("ascii")
                    header = (self.middleware.energy_header, value)
                    held = {**held, "headers": [*(held.get("headers") or ()), header]}
                except Exception:
                    self.middleware._warn("header", "could not add the energy header")
        return held

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
            totals = self.window.close(exc_type)  # the Measurement is built when asked for
            if totals is None:
                return None
            scope = self.scope
            metrics = middleware.metrics
            route = middleware._route(scope, self.start)
            result = RequestMeasurement(
                route=metrics.route_label(route) if metrics is not None else route or UNMATCHED,
                method=method_label(scope.get("method", "")),
                status=self.status,
                output_tokens=None if self.scanner is None else self.scanner.tokens,
                streamed=self.streamed,
                energy_j=totals[0],
                co2e_g=totals[1],
                window=self.window,
            )
            if metrics is not None:
                metrics.observe(result)
        except Exception:
            middleware._warn("close", "could not account a request")
            return None
        for observer in REQUEST_OBSERVERS:  # other exporters' (OTLP)
            try:
                observer(result)
            except Exception:
                middleware._warn("observer", "a request observer failed")
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

"""Local fakes of the carbon-intensity APIs, for tests: real HTTP on 127.0.0.1, the real paths,
auth and JSON shapes, and failures on demand.

* `FakeElectricityMaps`: ``GET /v3/carbon-intensity/latest?zone=Z`` and ``.../history?zone=Z``,
  ``auth-token`` header.
* `FakeWattTime`: ``GET /login`` (HTTP basic auth -> ``{"token": ...}``), then with ``Authorization:
  Bearer <token>``: ``GET /v3/forecast``, ``GET /v3/historical``, ``GET /v3/region-from-loc``;
  MOER in lbs/MWh.
* `FakeUKCarbonIntensity`: ``GET /intensity``, ``GET /intensity/{from}/{to}``,
  ``GET /regional/regionid/{id}``, ``GET /regional/intensity/{from}/{to}/regionid/{id}``; no key.

Each is a context manager serving on an ephemeral port (``fake.url``) from a daemon thread::

    from meter.carbon.providers import ElectricityMapsProvider
    from meter.testing.carbon_servers import FakeElectricityMaps

    def test_latest():
        with FakeElectricityMaps(token="t0k", intensity=420.0) as fake:
            em = ElectricityMapsProvider("t0k", base_url=fake.url)
            assert em.intensity("DE").g_per_kwh == 420.0
            assert fake.requests[0].headers["auth-token"] == "t0k"

Failures, each for the next request (``times=`` for more; ``path=`` to aim at a path prefix;
FakeWattTime aims at ``/v3/`` by default so that its login still works):
``fail_next(status, retry_after=...)``, ``hang_next(seconds)`` (the answer comes late, so the
client times out), ``malformed_next()`` (truncated JSON), ``html_next(status=200)`` (an HTML
page, as a captive portal or a proxy's error page sends), ``trickle_next(seconds_per_byte)``
(the right answer, one byte at a time: no read ever times out, only a deadline ends it) and
``huge_next(size_bytes)`` (a JSON answer of any size, streamed, never held whole).
``fake.requests`` records every request: method, path, query (last value of each parameter)
and headers (lower-case names).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "FakeElectricityMaps",
    "FakeUKCarbonIntensity",
    "FakeWattTime",
    "RecordedRequest",
]


@dataclass(frozen=True)
class RecordedRequest:
    """One request a fake received. ``headers`` has lower-case names."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Action:
    kind: str  # "status", "hang", "malformed", "html", "trickle", "huge"
    path: str | None
    status: int = 500
    retry_after: float | str | None = None
    seconds: float = 0.0
    body: Any = None
    headers_too: bool = False  # trickle: the status line and headers too, not only the body
    size: int = 0  # huge: the body's size in bytes (after decoding)
    declare_length: bool = True  # huge: send Content-Length
    gzip: bool = False  # huge: Content-Encoding: gzip


_PIECE = 64 * 1024


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(body).encode(), headers=dict(headers or {}))


def _error(status: int, message: str | None = None) -> _Reply:
    return _json(status, {"error": message or HTTPStatus(status).phrase})


def _iso(t: float, fmt: str | None = None) -> str:
    moment = datetime.fromtimestamp(t, timezone.utc)
    return moment.strftime(fmt) if fmt else moment.isoformat(timespec="seconds")


def _em_time(t: float) -> str:
    """Electricity Maps writes ``2019-05-21T00:00:00.000Z``."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{round((t % 1) * 1000) % 1000:03d}Z"
    )


def _parse(text: str) -> float:
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _value(number: float) -> float | int:
    """The APIs send whole numbers as JSON integers."""
    return int(number) if float(number).is_integer() else number


_F = TypeVar("_F", bound="_FakeServer")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: _FakeServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeCarbonAPI/1.0"

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _FakeServer:
    """What the three fakes share: the server thread, the request log, failure injection."""

    name = "fake"
    #: Injected failures aim at requests under this path prefix unless told otherwise.
    default_path: str | None = None

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._actions: deque[_Action] = deque()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------

    def start(self: _F) -> _F:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.fake = self
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"meter-fake-{self.name}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); requests left hanging are released."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self: _F) -> _F:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: pass it as the provider's ``base_url``."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use it in a with block")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # failure injection -----------------------------------------------------------------------

    def _push(self, action: _Action, times: int) -> None:
        with self._lock:
            self._actions.extend(_Action(**vars(action)) for _ in range(times))

    def fail_next(
        self,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        body: Any = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next request(s) with ``status`` (a JSON error body unless ``body``),
        with a ``Retry-After`` header when ``retry_after`` is given."""
        self._push(
            _Action("status", path or self.default_path, status, retry_after, body=body), times
        )

    def hang_next(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Hold the next request(s) ``seconds`` before answering (normally)."""
        self._push(_Action("hang", path or self.default_path, seconds=seconds), times)

    def malformed_next(self, *, times: int = 1, path: str | None = None) -> None:
        """Answer 200 with ``application/json`` that is cut off mid-document."""
        self._push(_Action("malformed", path or self.default_path), times)

    def html_next(self, status: int = 200, *, times: int = 1, path: str | None = None) -> None:
        """Answer with an HTML page (a captive portal at 200, a proxy's error page at 502)."""
        self._push(_Action("html", path or self.default_path, status), times)

    def trickle_next(
        self,
        seconds_per_byte: float,
        *,
        headers: bool = False,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Send the next answer(s) one byte every ``seconds_per_byte``: the body only (the
        headers, with the right Content-Length, come at once), or with ``headers=True`` the
        status line and headers too. Each byte comes well inside any read timeout, so only an
        overall deadline ends the client's wait."""
        action = _Action(
            "trickle", path or self.default_path, 200, seconds=seconds_per_byte, headers_too=headers
        )
        self._push(action, times)

    def huge_next(
        self,
        size_bytes: int,
        *,
        declare_length: bool = True,
        gzip: bool = False,
        status: int = 200,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer with a JSON document of ``size_bytes`` (``{"pad": "xxx..."}``), streamed in
        64 KiB pieces: with a ``Content-Length`` or, ``declare_length=False``, without one (read
        until the connection closes). ``gzip=True`` sends it gzip-compressed (a thousandth of
        that on the wire, ``size_bytes`` once decoded; Content-Length gives the compressed
        size)."""
        action = _Action(
            "huge",
            path or self.default_path,
            status,
            size=max(12, int(size_bytes)),
            declare_length=declare_length,
            gzip=gzip,
        )
        self._push(action, times)

    def requests_to(self, prefix: str) -> list[RecordedRequest]:
        """The recorded requests whose path starts with ``prefix``."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # serving ---------------------------------------------------------------------------------

    def route(self, request: RecordedRequest) -> _Reply:  # pragma: no cover - overridden
        return _error(404)

    def _take(self, path: str) -> _Action | None:
        with self._lock:
            for action in self._actions:
                if action.path is None or path.startswith(action.path):
                    self._actions.remove(action)
                    return action
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        request = RecordedRequest(
            method=handler.command,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in handler.headers.items()},
        )
        with self._lock:
            self.requests.append(request)
        action = self._take(request.path)
        reply: _Reply | None = None
        if action is not None and action.kind == "huge":
            self._send_huge(handler, action)
            return
        if action is not None:
            if action.kind == "hang":
                if self._stopping.wait(action.seconds):
                    return  # shutting down: drop the connection
            elif action.kind == "status":
                reply = (
                    _error(action.status)
                    if action.body is None
                    else _json(action.status, action.body)
                )
                if action.retry_after is not None:
                    reply.headers["Retry-After"] = str(action.retry_after)
            elif action.kind == "malformed":
                reply = _Reply(200, b'{"data": [{"zone": "DE", "carbonIntensity": 4')
            elif action.kind == "html":
                title = (
                    "Sign in to the network"
                    if action.status == 200
                    else f"{action.status} {HTTPStatus(action.status).phrase}"
                )
                page = (
                    f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
                    f"<body><h1>{title}</h1><hr><center>nginx</center></body></html>\n"
                )
                reply = _Reply(action.status, page.encode(), "text/html; charset=utf-8")
        if reply is None:
            try:
                reply = self.route(request)
            except Exception as exc:  # a bug in a fake must show, not hang the client
                reply = _error(500, f"fake {self.name} failed: {type(exc).__name__}: {exc}")
        if action is not None and action.kind == "trickle":
            self._send_trickle(handler, reply, action)
            return
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            pass

    def _send_trickle(
        self, handler: BaseHTTPRequestHandler, reply: _Reply, action: _Action
    ) -> None:
        head = [f"HTTP/1.0 {reply.status} {HTTPStatus(reply.status).phrase}"]
        head += [f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        slow = head_bytes + reply.body if action.headers_too else reply.body
        try:
            if not action.headers_too:
                handler.wfile.write(head_bytes)
            for index in range(len(slow)):
                if self._stopping.wait(action.seconds):
                    return  # shutting down: drop the connection
                handler.wfile.write(slow[index : index + 1])
        except (BrokenPipeError, ConnectionResetError):  # the client gave up
            pass

    def _send_huge(self, handler: BaseHTTPRequestHandler, action: _Action) -> None:
        opening, closing = b'{"pad": "', b'"}'
        filler = b"x" * _PIECE

        def pieces() -> Iterable[bytes]:
            yield opening
            left = action.size - len(opening) - len(closing)
            while left > 0:
                yield filler[: min(left, _PIECE)]
                left -= _PIECE
            yield closing

        body: Iterable[bytes] = pieces()
        length = action.size
        if action.gzip:
            packed = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            compressed = [packed.compress(piece) for piece in pieces()]
            compressed.append(packed.flush())
            body = compressed
            length = sum(len(piece) for piece in compressed)
        try:
            handler.send_response(action.status)
            handler.send_header("Content-Type", "application/json")
            if action.gzip:
                handler.send_header("Content-Encoding", "gzip")
            if action.declare_length:
                handler.send_header("Content-Length", str(length))
            handler.end_headers()
            for piece in body:
                if self._stopping.is_set():
                    return
                handler.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            pass


# -- Electricity Maps --------------------------------------------------------------------------


class FakeElectricityMaps(_FakeServer):
    """Electricity Maps API v3: ``latest`` and ``history`` (the past 24 h, hourly).

    ``intensity`` answers for every zone unless `set_intensity` gave the zone its own;
    `set_history` gives a zone's history as ``(hour start epoch s, g/kWh)`` pairs (default:
    the 24 hours up to now at the zone's intensity). Requests without ``auth-token: <token>``
    get 401.
    """

    name = "electricitymaps"
    LATEST = "/v3/carbon-intensity/latest"
    HISTORY = "/v3/carbon-intensity/history"

    def __init__(
        self,
        token: str = "t0k",
        intensity: float = 420.0,
        *,
        is_estimated: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.token = token
        self.intensity = intensity
        self.is_estimated = is_estimated
        self._zones: dict[str, float] = {}
        self._history: dict[str, list[tuple[float, float]]] = {}

    def set_intensity(self, zone: str, g_per_kwh: float) -> None:
        with self._lock:
            self._zones[zone] = g_per_kwh

    def set_history(self, zone: str, points: Iterable[tuple[float, float]]) -> None:
        with self._lock:
            self._history[zone] = sorted((float(t), float(v)) for t, v in points)

    def _point(self, zone: str, hour: float, value: float, now: float) -> dict[str, Any]:
        return {
            "zone": zone,
            "carbonIntensity": _value(value),
            "datetime": _em_time(hour),
            "updatedAt": _em_time(now),
            "createdAt": _em_time(hour - 86400),
            "emissionFactorType": "lifecycle",
            "isEstimated": self.is_estimated,
            "estimationMethod": "TIME_SLICER_AVERAGE" if self.is_estimated else None,
            "temporalGranularity": "hourly",
        }

    def route(self, request: RecordedRequest) -> _Reply:
        if request.path not in (self.LATEST, self.HISTORY):
            return _error(404)
        if request.headers.get("auth-token") != self.token:
            return _json(401, {"message": "Invalid or missing auth-token"})
        zone = request.query.get("zone")
        if not zone:
            return _json(400, {"message": "Either zone or lat/lon must be provided"})
        now = self.clock()
        hour = now - now % 3600
        with self._lock:
            value = self._zones.get(zone, self.intensity)
            history = self._history.get(zone)
        if request.path == self.LATEST:
            return _json(200, self._point(zone, hour, value, now))
        if history is None:
            history = [(hour - 3600 * i, value) for i in range(23, -1, -1)]
        return _json(
            200,
            {"zone": zone, "history": [self._point(zone, t, v, now) for t, v in history]},
        )


# -- WattTime ----------------------------------------------------------------------------------


class FakeWattTime(_FakeServer):
    """WattTime API v3: login, forecast, historical and region-from-loc, co2_moer in lbs/MWh.

    ``GET /login`` with HTTP basic ``username:password`` gives a new random token (recorded in
    ``issued_tokens``; wrong credentials get 401); data requests need ``Authorization: Bearer
    <a valid token>`` (401 otherwise; `expire_tokens` invalidates every token issued so far).
    `set_moer` gives a region its MOER; `set_history` gives ``(epoch s, lbs/MWh)`` points for
    ``/v3/historical`` (a point stands for five minutes; default: ``moer`` everywhere).
    """

    name = "watttime"
    default_path = "/v3/"
    PERIOD_S = 300

    def __init__(
        self,
        username: str = "user",
        password: str = "pass",
        moer: float = 850.0,
        *,
        units: str = "lbs_co2_per_mwh",
        loc_region: str = "CAISO_NORTH",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.username = username
        self.password = password
        self.moer = moer
        self.units = units
        self.loc_region = loc_region
        self.issued_tokens: list[str] = []
        self._valid: set[str] = set()
        self._regions: dict[str, float] = {}
        self._history: dict[str, list[tuple[float, float]]] = {}

    @property
    def logins(self) -> int:
        """How many successful logins there were."""
        return len(self.issued_tokens)

    def set_moer(self, region: str, lbs_per_mwh: float) -> None:
        with self._lock:
            self._regions[region] = lbs_per_mwh

    def set_history(self, region: str, points: Iterable[tuple[float, float]]) -> None:
        with self._lock:
            self._history[region] = sorted((float(t), float(v)) for t, v in points)

    def expire_tokens(self) -> None:
        with self._lock:
            self._valid.clear()

    def _meta(self, region: str, **extra: Any) -> dict[str, Any]:
        return {
            "data_point_period_seconds": self.PERIOD_S,
            "region": region,
            "warnings": [],
            "signal_type": "co2_moer",
            "model": {"date": "2023-03-01"},
            "units": self.units,
            **extra,
        }

    def _at(self, region: str, t: float) -> float:
        with self._lock:
            history = self._history.get(region)
            value = self._regions.get(region, self.moer)
        if history:
            before = [v for pt, v in history if pt <= t]
            if before:
                return before[-1]
        return value

    def route(self, request: RecordedRequest) -> _Reply:
        if request.path == "/login":
            return self._login(request)
        if request.path not in ("/v3/forecast", "/v3/historical", "/v3/region-from-loc"):
            return _error(404)
        auth = request.headers.get("authorization", "")
        with self._lock:
            valid = auth.startswith("Bearer ") and auth[7:] in self._valid
        if not valid:
            return _json(401, {"error": "Unauthorized: invalid or expired token"})
        q = request.query
        if request.path == "/v3/region-from-loc":
            if "latitude" not in q or "longitude" not in q or "signal_type" not in q:
                return _error(400, "latitude, longitude and signal_type are required")
            return _json(
                200,
                {
                    "region": self.loc_region,
                    "region_full_name": "California ISO Northern",
                    "signal_type": q["signal_type"],
                },
            )
        region = q.get("region")
        if not region or q.get("signal_type") != "co2_moer":
            return _error(400, "region and signal_type=co2_moer are required")
        now = self.clock()
        period = now - now % self.PERIOD_S
        if request.path == "/v3/forecast":
            horizon_h = float(q.get("horizon_hours", "24"))
            count = max(1, int(horizon_h * 3600 / self.PERIOD_S))
            data = [
                {
                    "point_time": _iso(period + i * self.PERIOD_S),
                    "value": _value(self._at(region, now)),
                }
                for i in range(count)
            ]
            return _json(200, {"data": data, "meta": self._meta(region, generated_at=_iso(period))})
        try:
            start, end = _parse(q["start"]), _parse(q["end"])
        except (KeyError, ValueError):
            return _error(400, "start and end (ISO 8601 with a time zone) are required")
        first = math.ceil(start / self.PERIOD_S) * self.PERIOD_S
        data = [
            {"point_time": _iso(t), "value": _value(self._at(region, t))}
            for t in range(int(first), int(end) + 1, self.PERIOD_S)
        ]
        return _json(200, {"data": data, "meta": self._meta(region)})

    def _login(self, request: RecordedRequest) -> _Reply:
        auth = request.headers.get("authorization", "")
        user = password = None
        if auth.startswith("Basic "):
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if user != self.username or password != self.password:
            return _json(401, {"error": "Unauthorized"})
        token = f"wt-{secrets.token_hex(16)}"
        with self._lock:
            self.issued_tokens.append(token)
            self._valid.add(token)
        return _json(200, {"token": token})


# -- UK Carbon Intensity -----------------------------------------------------------------------

#: The ``dnoregion`` names the API gives its region ids.
UK_DNO_REGIONS = {
    1: "Scottish Hydro Electric Power Distribution",
    2: "SP Distribution",
    3: "Electricity North West",
    4: "NPG North East",
    5: "NPG Yorkshire",
    6: "SP Manweb",
    7: "WPD South Wales",
    8: "WPD West Midlands",
    9: "WPD East Midlands",
    10: "UKPN East",
    11: "WPD South West",
    12: "SSE South",
    13: "UKPN London",
    14: "UKPN South East",
    15: "England",
    16: "Scotland",
    17: "Wales",
}


def _uk_index(g_per_kwh: float) -> str:
    """The API's qualitative band (approximate thresholds)."""
    for limit, word in ((40, "very low"), (120, "low"), (200, "moderate"), (290, "high")):
        if g_per_kwh < limit:
            return word
    return "very high"


class FakeUKCarbonIntensity(_FakeServer):
    """The UK Carbon Intensity API: national and regional, current and between two times.

    National periods carry ``forecast`` and ``actual`` (``None`` -> JSON null, as for a half
    hour not yet settled); regional ones only ``forecast``, as the real API. `set_national` and
    `set_regional` change every half hour, or only the one containing ``at``.
    """

    name = "uk-carbon-intensity"
    PERIOD_S = 1800
    _TIME = "%Y-%m-%dT%H:%MZ"

    def __init__(
        self,
        forecast: float = 180.0,
        actual: float | None = None,
        *,
        regional: Mapping[int, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self._national: tuple[float, float | None] = (forecast, actual)
        self._national_at: dict[int, tuple[float, float | None]] = {}
        self._regional: dict[int, float] = dict(regional or {})
        self._regional_at: dict[tuple[int, int], float] = {}

    def _period(self, t: float) -> int:
        return int(t - t % self.PERIOD_S)

    def set_national(
        self, forecast: float, actual: float | None = None, *, at: float | None = None
    ) -> None:
        with self._lock:
            if at is None:
                self._national = (forecast, actual)
            else:
                self._national_at[self._period(at)] = (forecast, actual)

    def set_regional(self, region_id: int, forecast: float, *, at: float | None = None) -> None:
        with self._lock:
            if at is None:
                self._regional[region_id] = forecast
            else:
                self._regional_at[(region_id, self._period(at))] = forecast

    def _national_period(self, start: int) -> dict[str, Any]:
        with self._lock:
            forecast, actual = self._national_at.get(start, self._national)
        return {
            "from": _iso(start, self._TIME),
            "to": _iso(start + self.PERIOD_S, self._TIME),
            "intensity": {
                "forecast": _value(forecast),
                "actual": None if actual is None else _value(actual),
                "index": _uk_index(actual if actual is not None else forecast),
            },
        }

    def _regional_period(self, region_id: int, start: int) -> dict[str, Any]:
        with self._lock:
            forecast = self._regional_at.get(
                (region_id, start), self._regional.get(region_id, self._national[0])
            )
        return {
            "from": _iso(start, self._TIME),
            "to": _iso(start + self.PERIOD_S, self._TIME),
            "intensity": {"forecast": _value(forecast), "index": _uk_index(forecast)},
            "generationmix": [
                {"fuel": "biomass", "perc": 5.1},
                {"fuel": "coal", "perc": 0.0},
                {"fuel": "imports", "perc": 9.8},
                {"fuel": "gas", "perc": 31.4},
                {"fuel": "nuclear", "perc": 14.9},
                {"fuel": "other", "perc": 0.2},
                {"fuel": "hydro", "perc": 1.6},
                {"fuel": "solar", "perc": 6.3},
                {"fuel": "wind", "perc": 30.7},
            ],
        }

    def _region(self, region_id: int, periods: list[dict[str, Any]]) -> dict[str, Any]:
        from meter.carbon.providers import UK_REGIONS

        return {
            "regionid": region_id,
            "dnoregion": UK_DNO_REGIONS[region_id],
            "shortname": UK_REGIONS[region_id],
            "data": periods,
        }

    def _starts(self, start_text: str, end_text: str) -> list[int] | None:
        try:
            start, end = _parse(start_text), _parse(end_text)
        except ValueError:
            return None
        first = self._period(start)
        return [t for t in range(first, int(end), self.PERIOD_S) if t + self.PERIOD_S > start]

    def route(self, request: RecordedRequest) -> _Reply:
        parts = [p for p in request.path.split("/") if p]
        now_start = self._period(self.clock())
        bad_time = _error(400, "Please enter a valid ISO 8601 datetime, e.g. 2018-01-20T12:00Z")
        if parts == ["intensity"]:
            return _json(200, {"data": [self._national_period(now_start)]})
        if len(parts) == 3 and parts[0] == "intensity":
            starts = self._starts(parts[1], parts[2])
            if starts is None:
                return bad_time
            return _json(200, {"data": [self._national_period(t) for t in starts]})
        region_id = None
        if parts[-2:-1] == ["regionid"]:
            region_id = int(parts[-1]) if parts[-1].isdigit() else -1
            if region_id not in UK_DNO_REGIONS:
                return _error(400, "Please enter a valid region id, 1 to 17")
        if region_id is not None and parts[:2] == ["regional", "regionid"] and len(parts) == 3:
            period = self._regional_period(region_id, now_start)
            return _json(200, {"data": [self._region(region_id, [period])]})
        if region_id is not None and parts[:2] == ["regional", "intensity"] and len(parts) == 6:
            starts = self._starts(parts[2], parts[3])
            if starts is None:
                return bad_time
            periods = [self._regional_period(region_id, t) for t in starts]
            # Between two times the API gives the region as an object, not a list.
            return _json(200, {"data": self._region(region_id, periods)})
        return _error(404)

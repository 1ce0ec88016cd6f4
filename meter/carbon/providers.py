"""Grid carbon-intensity providers behind one interface: ``intensity(zone, at) -> Intensity``.

Offline: `ConstantProvider` (a figure you give) and `EmbeddedProvider` (the yearly table that
ships with meter; the default). Live: `ElectricityMapsProvider`, `WattTimeProvider` (marginal
MOER) and `UKCarbonIntensityProvider` (Great Britain, no key). A live provider is meant to be
wrapped in a `CachedProvider` (one request per zone and time bucket per TTL) inside a
`FallbackChain` that ends at the embedded table; every fallback is recorded in the returned
`Intensity` with its reason, never silent.

>>> from meter.carbon.providers import ConstantProvider
>>> ConstantProvider(250.0).intensity("DE", at=1_700_000_000.0).g_per_kwh
250.0

``provider_from_env()`` builds what the environment asks for (``METER_CARBON_PROVIDER``, see
there). Its default, the embedded table, opens no socket and does not import ``requests``.

Secrets (API tokens, passwords, WattTime's bearer tokens) live in private attributes, are
masked in every ``repr`` and are scrubbed from every error reason; nothing here logs them.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol, runtime_checkable

from meter.errors import ConfigError, MeterError

__all__ = [
    "ELECTRICITYMAPS_URL",
    "UK_CARBON_INTENSITY_URL",
    "UK_REGIONS",
    "WATTTIME_REGIONS",
    "WATTTIME_URL",
    "CachedProvider",
    "ConstantProvider",
    "ElectricityMapsProvider",
    "EmbeddedProvider",
    "FallbackChain",
    "Intensity",
    "Provider",
    "ProviderError",
    "UKCarbonIntensityProvider",
    "WattTimeProvider",
    "provider_from_env",
]

log = logging.getLogger("meter")

ELECTRICITYMAPS_URL = "https://api.electricitymap.org"
WATTTIME_URL = "https://api.watttime.org"
UK_CARBON_INTENSITY_URL = "https://api.carbonintensity.org.uk"

#: 1 lb = 0.45359237 kg exactly, so 1 lb/MWh = 453.59237 g / 1000 kWh = 0.45359237 g/kWh.
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237

#: Meter zones (Electricity Maps keys) -> WattTime v3 regions. Deliberately small: pass
#: ``region=`` (or set ``METER_WATTTIME_REGION``) for anything else. ``CAISO_NORTH`` stands for
#: the whole CAISO balancing area here; it is also the region a free WattTime account can read.
WATTTIME_REGIONS: Mapping[str, str] = {
    "US-CAL-CISO": "CAISO_NORTH",
    "US-TEN-TVA": "TVA",
}

#: UK Carbon Intensity API region ids (https://carbon-intensity.github.io/api-definitions/):
#: 1..14 are the DNO regions, 15..17 the nations. Use them as zones ``GB-REGION-<id>``.
UK_REGIONS: Mapping[int, str] = {
    1: "North Scotland",
    2: "South Scotland",
    3: "North West England",
    4: "North East England",
    5: "Yorkshire",
    6: "North Wales & Merseyside",
    7: "South Wales",
    8: "West Midlands",
    9: "East Midlands",
    10: "East England",
    11: "South West England",
    12: "South England",
    13: "London",
    14: "South East England",
    15: "England",
    16: "Scotland",
    17: "Wales",
}

_UK_REGION_ZONE = re.compile(r"GB-REGION-(\d{1,2})")
_UK_NATIONAL_ZONES = frozenset({"GB"})  # Electricity Maps' key for Great Britain

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
DEFAULT_TTL_S = 300.0
#: Longest ``Retry-After`` a lookup waits out; a longer one fails now (and is cached that long).
MAX_RETRY_AFTER_S = 5.0


# -- the result and the interface --------------------------------------------------------------


@dataclass(frozen=True)
class Intensity:
    """A grid carbon intensity: ``g_per_kwh`` gCO2e/kWh in ``zone`` at wall time ``at``.

    ``source`` names what answered (``electricitymaps``, ``watttime``, ``uk-carbon-intensity``,
    ``embedded:electricitymaps-2025``, ``constant``). ``marginal``: a marginal rate (WattTime's
    MOER), not a grid average. ``estimated``: the source flagged the figure as estimated or
    forecast. ``fallbacks``: ``"provider: reason"`` for each provider that failed before this
    one answered, in order.
    """

    g_per_kwh: float
    zone: str
    source: str
    at: float
    marginal: bool = False
    estimated: bool = False
    fallbacks: tuple[str, ...] = ()


class ProviderError(MeterError):
    """A provider could not give an intensity. ``reason`` says why, without the provider's
    name and never with a secret in it; ``kind`` is one of ``auth``, ``rate-limited``,
    ``server``, ``timeout``, ``connection``, ``malformed``, ``http``, ``no-data``, ``zone``.
    ``retry_after_s``: how long the server asked us to wait, when it did."""

    def __init__(
        self,
        reason: str,
        *,
        provider: str | None = None,
        kind: str = "error",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {reason}" if provider else reason)
        self.reason = reason
        self.provider = provider
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s


@runtime_checkable
class Provider(Protocol):
    """Anything that gives a carbon intensity for a zone at a wall time (``None``: now).

    ``name`` is used in fallback reasons. Providers may raise `ProviderError`.
    """

    name: str

    def intensity(self, zone: str, at: float | None = None) -> Intensity: ...


# -- small helpers -----------------------------------------------------------------------------


class _Secret:
    """A string that never shows itself in a repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def _check_zone(zone: Any) -> str:
    if not isinstance(zone, str) or not zone.strip():
        raise ConfigError(
            f"zone={zone!r}: give a grid zone key such as 'DE', 'US-CAL-CISO' or 'GB'",
            setting="zone",
        )
    return zone.strip()


def _check_at(at: Any) -> float | None:
    if at is None:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise ConfigError(
            f"at={at!r}: give a wall time in seconds since the epoch (time.time()), or None "
            "for now",
            setting="at",
        )
    return float(at)


def _check_positive(value: Any, setting: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}={value!r} is not a number", setting=setting) from None
    bound = ">= 0" if allow_zero else "> 0"
    if (
        isinstance(value, bool)
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        raise ConfigError(f"{setting}={value!r} must be a finite number {bound}", setting=setting)
    return number


def _check_retries(retries: Any) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ConfigError(f"retries={retries!r} must be an integer 0..10", setting="retries")
    return retries


def _check_url(url: Any, setting: str = "base_url") -> str:
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url.strip()):
        raise ConfigError(
            f"{setting}={url!r} is not an http(s) URL; e.g. https://api.electricitymap.org",
            setting=setting,
        )
    return url.strip().rstrip("/")


_FRACTION = re.compile(r"(\.\d+)")


def _parse_time(value: Any) -> float:
    """ISO 8601 (``2019-05-21T00:00:00.000Z``, ``2018-01-20T12:00Z``, ``...+00:00``) -> epoch s.

    Python 3.10's ``fromisoformat`` takes neither ``Z`` nor fractions of other than 3 or 6
    digits, so both are normalised first. A time without an offset is UTC.
    """
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], text, count=1)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _number(value: Any) -> float | None:
    """A JSON number as a finite float >= 0, or None (null, missing, negative, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _iso_utc(t: float, fmt: str | None = None) -> str:
    moment = datetime.fromtimestamp(t, timezone.utc)
    return moment.strftime(fmt) if fmt else moment.isoformat(timespec="seconds")


def _retry_after_s(header: str | None) -> float | None:
    """``Retry-After``: delay seconds or an HTTP date (RFC 9110 10.2.3); None when absent."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


# -- the shared HTTP behaviour -----------------------------------------------------------------


class _Http:
    """GET JSON with the behaviour every live provider shares.

    * Short connect and read timeouts (``timeout_s`` each).
    * Up to ``retries`` more attempts for timeouts, connection errors and 5xx, with
      exponential backoff (0.25 s, 0.5 s, ... at most 2 s).
    * 429 (and 503) with ``Retry-After``: wait that long if it is at most
      ``max_retry_after_s``; a longer wait fails now, with ``retry_after_s`` set.
    * 401/403 fail at once (no retry), telling which setting to check.
    * Redirects are not followed: a custom auth header (Electricity Maps' ``auth-token``) would
      be sent on to wherever the redirect points.
    * A body that is not JSON (an HTML error page, a truncated document) is a
      ``malformed response``.
    * Every reason is scrubbed of the registered secrets.

    ``requests`` is imported on first use, so building a provider opens nothing.
    """

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        timeout_s: float,
        retries: int,
        session: Any,
        auth_hint: str,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.base_url = _check_url(base_url)
        self.timeout_s = _check_positive(timeout_s, "timeout_s")
        self.retries = _check_retries(retries)
        self.max_retry_after_s = _check_positive(
            max_retry_after_s, "max_retry_after_s", allow_zero=True
        )
        self.auth_hint = auth_hint
        self._session = session
        self._own_session = session is None
        self._session_lock = threading.Lock()
        self._sleep = sleep
        self._secrets: list[str] = []
        self._tokens: deque[str] = deque(maxlen=8)  # short-lived tokens (WattTime logins)

    # secrets ---------------------------------------------------------------------------------

    def add_secret(self, value: str, *, short_lived: bool = False) -> None:
        if len(value) < 3:  # scrubbing a one- or two-letter "secret" would mangle every message
            return
        if short_lived:
            self._tokens.append(value)
        else:
            self._secrets.append(value)

    def scrub(self, text: str) -> str:
        for secret in (*self._secrets, *self._tokens):
            text = text.replace(secret, "***")
        return text

    def error(self, reason: str, **fields: Any) -> ProviderError:
        return ProviderError(self.scrub(reason), provider=self.provider, **fields)

    # the request -----------------------------------------------------------------------------

    def session(self) -> Any:
        with self._session_lock:
            if self._session is None:
                import requests

                self._session = requests.Session()
                self._session.headers["User-Agent"] = "ai-energy-meter (carbon intensity lookup)"
            return self._session

    def close(self) -> None:
        with self._session_lock:
            if self._own_session and self._session is not None:
                self._session.close()
                self._session = None

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        import requests

        session = self.session()
        url = self.base_url + path
        attempts = self.retries + 1
        failure, kind, status = "no attempt made", "error", None
        for attempt in range(attempts):
            delay = min(2.0, 0.25 * 2**attempt)
            try:
                response = session.get(
                    url,
                    params=params,
                    headers=dict(headers or {}),
                    auth=auth,
                    timeout=(self.timeout_s, self.timeout_s),
                    allow_redirects=False,
                )
            except requests.Timeout:
                failure, kind, status = f"timed out after {self.timeout_s:g} s", "timeout", None
            except requests.ConnectionError as exc:
                failure, kind, status = f"connection failed ({_cause(exc)})", "connection", None
            except requests.RequestException as exc:
                raise self.error(f"request failed ({type(exc).__name__})", kind="http") from None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._decode(response)
                if status in (401, 403):
                    word = "unauthorized" if status == 401 else "forbidden"
                    raise self.error(
                        f"HTTP {status} {word}: check {self.auth_hint}", kind="auth", status=status
                    )
                if status == 429 or status >= 500:
                    wait = _retry_after_s(response.headers.get("Retry-After"))
                    if status == 429:
                        failure, kind = "rate limited (HTTP 429)", "rate-limited"
                    else:
                        failure, kind = f"server error (HTTP {status})", "server"
                    if wait is not None and wait > self.max_retry_after_s:
                        raise self.error(
                            f"{failure}: Retry-After {wait:g} s is over the "
                            f"{self.max_retry_after_s:g} s this lookup may wait",
                            kind=kind,
                            status=status,
                            retry_after_s=wait,
                        )
                    if wait is not None:
                        delay = wait
                else:
                    # 3xx (not followed) and the other 4xx: retrying will not help.
                    raise self.error(
                        f"HTTP {status}{_detail(response)}", kind="http", status=status
                    )
            log.debug("meter: %s %s attempt %d: %s", self.provider, path, attempt + 1, failure)
            if attempt + 1 < attempts:
                self._sleep(delay)
        if attempts > 1:
            failure = f"{failure}, {attempts} attempts"
        raise self.error(failure, kind=kind, status=status)

    def _decode(self, response: Any) -> Any:
        ctype = str(response.headers.get("Content-Type", "")).lower()
        text = response.text
        if "html" in ctype or text.lstrip()[:1] == "<":
            raise self.error(
                f"malformed response (HTTP {response.status_code}): an HTML page, not JSON"
                f"{_detail(response)}",
                kind="malformed",
                status=response.status_code,
            )
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self.error(
                f"malformed response (HTTP {response.status_code}): not valid JSON ({exc})",
                kind="malformed",
                status=response.status_code,
            ) from None


def _cause(exc: BaseException) -> str:
    """A short cause for a connection error: ``[Errno 111] Connection refused``, or the type."""
    match = re.search(r"\[Errno -?\d+\][^)'\"]*", str(exc))
    return match.group(0).strip() if match else type(exc).__name__


def _detail(response: Any) -> str:
    """A short hint from an error body: an HTML ``<title>``, or a JSON ``error``/``message``."""
    try:
        text = response.text[:4096]
    except Exception:
        return ""
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        hint = title.group(1)
    else:
        try:
            body = json.loads(text)
        except ValueError:
            return ""
        hint = ""
        if isinstance(body, dict):
            for key in ("error", "message", "detail"):
                if isinstance(body.get(key), str):
                    hint = body[key]
                    break
    hint = " ".join(hint.split())[:120]
    return f" ({hint})" if hint else ""


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _malformed(http: _Http, what: str) -> ProviderError:
    return http.error(f"malformed response: {what}", kind="malformed")


# -- offline providers -------------------------------------------------------------------------


class ConstantProvider:
    """The same intensity everywhere and always: ``g_per_kwh`` gCO2e/kWh, reported for
    ``zone`` (``custom`` unless you name it).

    >>> ConstantProvider(0.0, zone="onsite-solar").intensity("FR").zone
    'onsite-solar'
    """

    name = "constant"
    live = False

    def __init__(self, g_per_kwh: float, zone: str = "custom") -> None:
        if isinstance(g_per_kwh, bool) or not isinstance(g_per_kwh, (int, float)):
            raise ConfigError(
                f"g_per_kwh={g_per_kwh!r}: give a carbon intensity in gCO2e/kWh, e.g. 250.0",
                setting="g_per_kwh",
            )
        if not math.isfinite(g_per_kwh) or g_per_kwh < 0:
            raise ConfigError(
                f"g_per_kwh={g_per_kwh!r}: a carbon intensity is a finite number of gCO2e/kWh "
                ">= 0 (e.g. 250.0; 0 for a fully carbon-free supply)",
                setting="g_per_kwh",
            )
        self.g_per_kwh = float(g_per_kwh)
        self.zone = _check_zone(zone)

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        _check_zone(zone)
        when = _check_at(at)
        return Intensity(
            self.g_per_kwh, self.zone, "constant", time.time() if when is None else when
        )

    def __repr__(self) -> str:
        return f"ConstantProvider(g_per_kwh={self.g_per_kwh!r}, zone={self.zone!r})"


class EmbeddedProvider:
    """Yearly average intensities from the table shipped with meter (offline, the default).

    ``table``: anything with ``get(key) -> record | None`` whose records have ``key``,
    ``g_per_kwh``, ``year`` and ``source``; by default `meter.carbon.table.load_table()`,
    loaded on first use. ``source`` reads ``embedded:<record source>-<year>``.
    """

    name = "embedded"
    live = False

    def __init__(self, table: Any = None) -> None:
        if table is not None and not callable(getattr(table, "get", None)):
            raise ConfigError(
                f"table={table!r} has no get(key) method; pass a meter.carbon.table.Table",
                setting="table",
            )
        self._table = table
        self._lock = threading.Lock()

    @property
    def table(self) -> Any:
        with self._lock:
            if self._table is None:
                from meter.carbon.table import load_table

                self._table = load_table()
            return self._table

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        record = self.table.get(key)
        if record is None:
            raise ProviderError(
                f"zone {key!r} is not in the embedded table (see `meter zones` for the keys)",
                provider=self.name,
                kind="zone",
            )
        return Intensity(
            g_per_kwh=float(record.g_per_kwh),
            zone=str(getattr(record, "key", key)),
            source=f"embedded:{record.source}-{record.year}",
            at=time.time() if when is None else when,
        )

    def __repr__(self) -> str:
        return "EmbeddedProvider()" if self._table is None else f"EmbeddedProvider({self._table!r})"


# -- Electricity Maps --------------------------------------------------------------------------


class ElectricityMapsProvider:
    """Electricity Maps API v3 (https://api.electricitymap.org): ``GET
    /v3/carbon-intensity/latest?zone=Z`` for now and the last hour, ``GET
    /v3/carbon-intensity/history?zone=Z`` (the past 24 h, hourly) for older times, with the
    token in the ``auth-token`` header.

    The token comes from ``token`` or ``ELECTRICITYMAPS_TOKEN`` (``ELECTRICITY_MAPS_TOKEN``
    also works). Zones are Electricity Maps keys, the embedded table's vocabulary. Figures are
    lifecycle gCO2eq/kWh (the API's default ``emissionFactorType``); ``isEstimated`` becomes
    ``Intensity.estimated``.

    >>> em = ElectricityMapsProvider(token="...")          # doctest: +SKIP
    >>> em.intensity("DE").g_per_kwh                        # doctest: +SKIP
    """

    name = "electricitymaps"
    live = True
    TOKEN_VARIABLES = ("ELECTRICITYMAPS_TOKEN", "ELECTRICITY_MAPS_TOKEN")
    #: Times within this of now are served by ``latest`` (when its hour covers them).
    RECENT_S = 3600.0
    HISTORY_S = 24 * 3600.0
    _HOUR_S = 3600.0

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str = ELECTRICITYMAPS_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        session: Any = None,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        environ: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        env = _env(environ)
        if token is None:
            token = next((env[v] for v in self.TOKEN_VARIABLES if env.get(v, "").strip()), None)
        if not isinstance(token, str) or not token.strip():
            raise ConfigError(
                "Electricity Maps needs an API token: set ELECTRICITYMAPS_TOKEN (or "
                "ELECTRICITY_MAPS_TOKEN), or pass token=...; get one at "
                "https://portal.electricitymaps.com",
                setting="ELECTRICITYMAPS_TOKEN",
            )
        self._token = _Secret(token.strip())
        self._http = _Http(
            self.name,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            session=session,
            max_retry_after_s=max_retry_after_s,
            auth_hint="ELECTRICITYMAPS_TOKEN (is the token valid, and does its plan cover "
            "this zone and endpoint?)",
        )
        self._http.add_secret(self._token.get())
        self._wall_clock = wall_clock

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        now = self._wall_clock()
        if when is None or abs(now - when) <= self.RECENT_S:
            latest = self._entry(self._get("/v3/carbon-intensity/latest", key), key)
            # ``latest`` is the current hour; an earlier hour comes from the history.
            if when is None or when >= latest.at:
                return latest
        assert when is not None
        if when > now + self.RECENT_S:
            raise self._http.error("no data for a time in the future", kind="no-data")
        if now - when > self.HISTORY_S:
            raise self._http.error("the history endpoint covers only the past 24 h", kind="no-data")
        body = self._get("/v3/carbon-intensity/history", key)
        history = body.get("history") if isinstance(body, dict) else None
        if not isinstance(history, list):
            raise _malformed(self._http, "no 'history' list")
        entries = [self._entry(item, key, strict=False) for item in history]
        covering = [e for e in entries if e is not None and e.at <= when < e.at + self._HOUR_S]
        if not covering:
            raise self._http.error(
                "the history has no entry covering the requested time", kind="no-data"
            )
        return max(covering, key=lambda e: e.at)

    def _get(self, path: str, zone: str) -> Any:
        return self._http.get_json(
            path, params={"zone": zone}, headers={"auth-token": self._token.get()}
        )

    def _entry(self, item: Any, zone: str, *, strict: bool = True) -> Any:
        if not isinstance(item, dict):
            if strict:
                raise _malformed(self._http, "expected a JSON object")
            return None
        value = _number(item.get("carbonIntensity"))
        try:
            at = _parse_time(item.get("datetime"))
        except (ValueError, TypeError, OverflowError):
            if strict:
                raise _malformed(self._http, "no valid 'datetime'") from None
            return None
        if value is None:
            if strict:
                raise self._http.error(
                    f"no carbon intensity for zone {zone!r} (carbonIntensity is "
                    f"{item.get('carbonIntensity')!r})",
                    kind="no-data",
                )
            return None
        return Intensity(
            g_per_kwh=value,
            zone=str(item.get("zone") or zone),
            source=self.name,
            at=at,
            estimated=bool(item.get("isEstimated")),
        )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (
            f"ElectricityMapsProvider(token={self._token!r}, base_url={self.base_url!r}, "
            f"timeout_s={self._http.timeout_s:g}, retries={self._http.retries})"
        )


# -- WattTime ----------------------------------------------------------------------------------


class WattTimeProvider:
    """WattTime API v3 (https://api.watttime.org): marginal operating emissions rate
    (``co2_moer``), flagged ``marginal=True``.

    Logs in with HTTP basic auth (``GET /login`` -> ``{"token": ...}``; the token lasts 30
    minutes and is renewed after 25, or once on a 401), then reads ``GET /v3/forecast?
    region=R&signal_type=co2_moer&horizon_hours=0`` for now (its first point is the current
    five-minute value, ``estimated=True``) or ``GET /v3/historical?region=R&start=..&end=..&
    signal_type=co2_moer`` for older times. MOER in lbs/MWh is converted to g/kWh (x 0.45359237).

    Credentials: ``username``/``password`` or ``WATTTIME_USERNAME``/``WATTTIME_PASSWORD``. The
    WattTime region is ``region`` when given, else `WATTTIME_REGIONS` [zone]; other zones fail
    (and fall back). ``Intensity.zone`` is the meter zone asked for.
    """

    name = "watttime"
    live = True
    RECENT_S = 600.0
    TOKEN_LIFETIME_S = 25 * 60.0
    _CONVERSIONS: ClassVar[dict[str, float]] = {
        "lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
        "kg_co2_per_mwh": 1.0,
        "g_co2_per_kwh": 1.0,
    }

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        base_url: str = WATTTIME_URL,
        region: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        session: Any = None,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        environ: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = _env(environ)
        username = username if username is not None else env.get("WATTTIME_USERNAME", "")
        password = password if password is not None else env.get("WATTTIME_PASSWORD", "")
        missing = [
            name
            for name, value in (("WATTTIME_USERNAME", username), ("WATTTIME_PASSWORD", password))
            if not isinstance(value, str) or not value.strip()
        ]
        if missing:
            raise ConfigError(
                f"WattTime needs a username and password: set {' and '.join(missing)} (or pass "
                "username=/password=); register at https://watttime.org",
                setting=missing[0],
            )
        assert isinstance(username, str) and isinstance(password, str)
        if region is not None and (not isinstance(region, str) or not region.strip()):
            raise ConfigError(
                f"region={region!r}: give a WattTime region such as 'CAISO_NORTH'",
                setting="region",
            )
        self.region = region.strip() if region else None
        self.username = username.strip()
        self._password = _Secret(password)
        self._http = _Http(
            self.name,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            session=session,
            max_retry_after_s=max_retry_after_s,
            auth_hint="WATTTIME_USERNAME and WATTTIME_PASSWORD, and that your WattTime plan "
            "covers this region",
        )
        basic = base64.b64encode(f"{self.username}:{password}".encode()).decode()
        self._http.add_secret(password)
        self._http.add_secret(basic)
        self._wall_clock = wall_clock
        self._clock = clock
        self._token: _Secret | None = None
        self._token_expires = 0.0
        self._login_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def region_for(self, zone: str) -> str:
        """The WattTime region for a meter zone (``region`` wins), or a `ProviderError`."""
        if self.region:
            return self.region
        region = WATTTIME_REGIONS.get(zone.strip().upper())
        if region is None:
            raise self._http.error(
                f"no WattTime region is known for zone {zone!r}: pass region=... (or set "
                "METER_WATTTIME_REGION), e.g. 'CAISO_NORTH'",
                kind="zone",
            )
        return region

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        region = self.region_for(key)
        now = self._wall_clock()
        if when is None or abs(now - when) <= self.RECENT_S:
            body = self._data(
                "/v3/forecast",
                {"region": region, "signal_type": "co2_moer", "horizon_hours": 0},
            )
            points, factor = self._points(body)
            if not points:
                raise self._http.error("the forecast has no data points", kind="no-data")
            point_time, value = points[0]
            return Intensity(
                value * factor, key, self.name, point_time, marginal=True, estimated=True
            )
        if when > now:
            raise self._http.error("no data for a time in the future", kind="no-data")
        body = self._data(
            "/v3/historical",
            {
                "region": region,
                "start": _iso_utc(when - 900.0),
                "end": _iso_utc(when + 60.0),
                "signal_type": "co2_moer",
            },
        )
        points, factor = self._points(body)
        before = [(t, v) for t, v in points if t <= when]
        if not before:
            raise self._http.error(
                "the historical data has no point at or before the requested time",
                kind="no-data",
            )
        point_time, value = max(before)
        return Intensity(value * factor, key, self.name, point_time, marginal=True)

    # login and data --------------------------------------------------------------------------

    def _login(self) -> str:
        try:
            body = self._http.get_json("/login", auth=(self.username, self._password.get()))
        except ProviderError as exc:
            if exc.kind == "auth":
                raise self._http.error(
                    f"login failed (HTTP {exc.status}): check WATTTIME_USERNAME and "
                    "WATTTIME_PASSWORD",
                    kind="auth",
                    status=exc.status,
                ) from None
            raise
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise _malformed(self._http, "the login answer has no 'token'")
        self._http.add_secret(token, short_lived=True)
        self._token = _Secret(token)
        self._token_expires = self._clock() + self.TOKEN_LIFETIME_S
        return token

    def _current_token(self, *, renew_from: _Secret | None = None) -> _Secret:
        with self._login_lock:
            token = self._token
            stale = token is None or self._clock() >= self._token_expires
            if stale or (renew_from is not None and token is renew_from):
                self._login()
            assert self._token is not None
            return self._token

    def _data(self, path: str, params: Mapping[str, Any]) -> Any:
        token = self._current_token()
        try:
            return self._http.get_json(
                path, params=params, headers={"Authorization": f"Bearer {token.get()}"}
            )
        except ProviderError as exc:
            if exc.status != 401:
                raise
        # An expired or revoked token: log in again, once.
        token = self._current_token(renew_from=token)
        return self._http.get_json(
            path, params=params, headers={"Authorization": f"Bearer {token.get()}"}
        )

    def _points(self, body: Any) -> tuple[list[tuple[float, float]], float]:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise _malformed(self._http, "no 'data' list")
        meta = body.get("meta")
        if not isinstance(meta, dict):
            meta = {}
        units = str(meta.get("units") or "lbs_co2_per_mwh").lower()
        factor = self._CONVERSIONS.get(units)
        if factor is None:
            raise _malformed(self._http, f"unexpected units {units!r}")
        points = []
        for item in body["data"]:
            if not isinstance(item, dict):
                continue
            value = _number(item.get("value"))
            try:
                point_time = _parse_time(item.get("point_time"))
            except (ValueError, TypeError, OverflowError):
                continue
            if value is not None:
                points.append((point_time, value))
        if body["data"] and not points:
            raise _malformed(self._http, "no data point has a valid point_time and value")
        return points, factor

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (
            f"WattTimeProvider(username={self.username!r}, password='***', "
            f"base_url={self.base_url!r}, region={self.region!r})"
        )


# -- UK Carbon Intensity -----------------------------------------------------------------------


class UKCarbonIntensityProvider:
    """The UK Carbon Intensity API (NESO, https://api.carbonintensity.org.uk, no key).

    Zones: ``GB`` (Electricity Maps' key for Great Britain) is national, or the region
    ``region_id`` when given; ``GB-REGION-<id>`` is a region, ids in `UK_REGIONS` (1..17).
    National: ``GET /intensity`` (the current half hour) and ``GET /intensity/{from}/{to}``;
    the ``actual`` figure when published, else the ``forecast`` (``estimated=True``). Regional:
    ``GET /regional/regionid/{id}`` and ``GET /regional/intensity/{from}/{to}/regionid/{id}``;
    regional figures are forecasts only, so always ``estimated=True``. Northern Ireland is not
    on the GB grid and is not covered.
    """

    name = "uk-carbon-intensity"
    live = True
    _HALF_HOUR_S = 1800.0
    _TIME_FORMAT = "%Y-%m-%dT%H:%MZ"

    def __init__(
        self,
        *,
        base_url: str = UK_CARBON_INTENSITY_URL,
        region_id: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        session: Any = None,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if region_id is not None and (
            isinstance(region_id, bool)
            or not isinstance(region_id, int)
            or region_id not in UK_REGIONS
        ):
            raise ConfigError(
                f"region_id={region_id!r}: UK Carbon Intensity regions are 1..17 "
                "(13 = London, 15 = England, 16 = Scotland, 17 = Wales)",
                setting="region_id",
            )
        self.region_id = region_id
        self._http = _Http(
            self.name,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            session=session,
            max_retry_after_s=max_retry_after_s,
            auth_hint="your network: the UK Carbon Intensity API needs no key, so a proxy or "
            "firewall is refusing the request",
        )
        self._wall_clock = wall_clock

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def region_for(self, zone: str) -> int | None:
        """The region id for a zone (None: national), or a `ProviderError`."""
        key = zone.strip().upper()
        if key in _UK_NATIONAL_ZONES:
            return self.region_id
        match = _UK_REGION_ZONE.fullmatch(key)
        if match and int(match.group(1)) in UK_REGIONS:
            return int(match.group(1))
        raise self._http.error(
            f"zone {zone!r} is not covered: the UK Carbon Intensity API covers Great Britain "
            "('GB', or 'GB-REGION-1' .. 'GB-REGION-17')",
            kind="zone",
        )

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        region = self.region_for(key)
        label = "GB" if region is None else f"GB-REGION-{region}"
        now = self._wall_clock()
        current_period = now - now % self._HALF_HOUR_S
        if when is None or current_period <= when < current_period + self._HALF_HOUR_S:
            if region is None:
                periods = self._national(self._http.get_json("/intensity"))
            else:
                periods = self._regional(self._http.get_json(f"/regional/regionid/{region}"))
            if not periods:
                raise self._http.error("the answer has no half-hour period", kind="no-data")
            found = periods[0]
            if when is None or found[0] <= when < found[1]:
                return self._result(found, label)
        assert when is not None
        start = _iso_utc(when - self._HALF_HOUR_S, self._TIME_FORMAT)
        end = _iso_utc(when + self._HALF_HOUR_S, self._TIME_FORMAT)
        if region is None:
            periods = self._national(self._http.get_json(f"/intensity/{start}/{end}"))
        else:
            periods = self._regional(
                self._http.get_json(f"/regional/intensity/{start}/{end}/regionid/{region}")
            )
        covering = [p for p in periods if p[0] <= when < p[1]]
        if not covering:
            raise self._http.error("no half-hour period covers the requested time", kind="no-data")
        return self._result(covering[0], label)

    def _result(self, period: tuple[float, float, float, bool], zone: str) -> Intensity:
        start, _end, value, estimated = period
        return Intensity(value, zone, self.name, start, estimated=estimated)

    def _periods(self, items: Any) -> list[tuple[float, float, float, bool]]:
        """``[{"from", "to", "intensity": {"forecast", "actual"?, "index"}}]`` -> (from, to,
        g/kWh, estimated); ``actual`` when it is published, else ``forecast``."""
        if not isinstance(items, list):
            raise _malformed(self._http, "no list of half-hour periods")
        periods = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("intensity"), dict):
                raise _malformed(self._http, "a period has no 'intensity'")
            try:
                start, end = _parse_time(item.get("from")), _parse_time(item.get("to"))
            except (ValueError, TypeError, OverflowError):
                raise _malformed(self._http, "a period has no valid 'from'/'to'") from None
            actual = _number(item["intensity"].get("actual"))
            forecast = _number(item["intensity"].get("forecast"))
            if actual is not None:
                periods.append((start, end, actual, False))
            elif forecast is not None:
                periods.append((start, end, forecast, True))
        if items and not periods:
            raise self._http.error("no period has an actual or forecast figure", kind="no-data")
        return periods

    def _national(self, body: Any) -> list[tuple[float, float, float, bool]]:
        if not isinstance(body, dict):
            raise _malformed(self._http, "expected a JSON object")
        return self._periods(body.get("data"))

    def _regional(self, body: Any) -> list[tuple[float, float, float, bool]]:
        # /regional/regionid/{id}: {"data": [{"regionid", ..., "data": [periods]}]};
        # /regional/intensity/{from}/{to}/regionid/{id}: {"data": {"regionid", ..., "data": [...]}}
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list):
            data = data[0] if data else None
        if not isinstance(data, dict):
            raise _malformed(self._http, "no region in 'data'")
        return [(s, e, v, True) for s, e, v, _ in self._periods(data.get("data"))]

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (
            f"UKCarbonIntensityProvider(base_url={self.base_url!r}, region_id={self.region_id!r})"
        )


# -- caching and fallback ----------------------------------------------------------------------


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Intensity | None = None
        self.error: BaseException | None = None


class CachedProvider:
    """Caches another provider per (zone, time bucket) for ``ttl_s`` seconds.

    Lookups for times in the same ``bucket_s``-long bucket (default: ``ttl_s``; ``at=None`` is
    now, by ``wall_clock``) share one answer until it is ``ttl_s`` old by ``clock``, so a run
    that prices every sample interval makes one request per zone per bucket. A `ProviderError`
    is cached too, for ``error_ttl_s`` (or the server's ``Retry-After`` when longer), so a
    failing API is not asked on every sample. Thread-safe; concurrent misses for one key make
    one request, the others wait for it.

    >>> cached = CachedProvider(ConstantProvider(100.0), ttl_s=600)
    >>> cached.intensity("DE", at=0.0) is cached.intensity("DE", at=1.0)
    True
    """

    def __init__(
        self,
        provider: Provider,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        bucket_s: float | None = None,
        error_ttl_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        max_entries: int = 1024,
    ) -> None:
        if not callable(getattr(provider, "intensity", None)):
            raise ConfigError(
                f"{provider!r} is not a carbon intensity provider", setting="provider"
            )
        self.provider = provider
        self.name: str = getattr(provider, "name", type(provider).__name__)
        self.live: bool = bool(getattr(provider, "live", False))
        self.ttl_s = _check_positive(ttl_s, "ttl_s")
        self.bucket_s = self.ttl_s if bucket_s is None else _check_positive(bucket_s, "bucket_s")
        self.error_ttl_s = _check_positive(error_ttl_s, "error_ttl_s", allow_zero=True)
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_entries = max(1, int(max_entries))
        self._lock = threading.Lock()
        # key -> (expires at, by clock; Intensity or the ProviderError to raise again)
        self._entries: OrderedDict[tuple[str, int], tuple[float, Intensity | ProviderError]] = (
            OrderedDict()
        )
        self._pending: dict[tuple[str, int], _Pending] = {}

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key_zone = _check_zone(zone)
        when = _check_at(at)
        bucket = math.floor((self._wall_clock() if when is None else when) / self.bucket_s)
        key = (key_zone, bucket)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() < entry[0]:
                self._entries.move_to_end(key)
                return self._unwrap(entry[1])
            pending = self._pending.get(key)
            leader = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
        if not leader:
            pending.done.wait()
            if isinstance(pending.error, ProviderError):
                raise _fresh(pending.error)
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            return pending.result
        try:
            result = self.provider.intensity(key_zone, when)
        except ProviderError as exc:
            pending.error = exc
            hold = max(self.error_ttl_s, exc.retry_after_s or 0.0)
            if hold > 0:
                self._store(key, self._clock() + hold, exc)
            raise
        except BaseException as exc:  # a bug, not a provider failure: not cached
            pending.error = exc
            raise
        else:
            pending.result = result
            self._store(key, self._clock() + self.ttl_s, result)
            return result
        finally:
            with self._lock:
                del self._pending[key]
            pending.done.set()

    def _store(
        self, key: tuple[str, int], expires: float, value: Intensity | ProviderError
    ) -> None:
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                now = self._clock()
                for stale in [k for k, (exp, _) in self._entries.items() if exp <= now]:
                    del self._entries[stale]
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)

    @staticmethod
    def _unwrap(value: Intensity | ProviderError) -> Intensity:
        if isinstance(value, ProviderError):
            raise _fresh(value)  # a new one: re-raising one object would grow its traceback
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        close = getattr(self.provider, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"CachedProvider({self.provider!r}, ttl_s={self.ttl_s:g})"


class FallbackChain:
    """Tries ``providers`` in order, then ``final`` (typically `EmbeddedProvider`).

    The answer carries ``"name: reason"`` in ``Intensity.fallbacks`` for every provider that
    failed before it, and its ``source`` says which one answered. A failure is logged as a
    warning once per (provider, reason), at debug level afterwards. Any exception from a
    provider before ``final`` falls back (metering must not break the job); if ``final``
    fails too, a `ProviderError` lists every reason.

    >>> chain = FallbackChain([], ConstantProvider(42.0))
    >>> chain.intensity("DE").source
    'constant'
    """

    _MAX_WARNED = 512

    def __init__(self, providers: Sequence[Provider], final: Provider) -> None:
        providers = list(providers)
        for provider in [*providers, final]:
            if not callable(getattr(provider, "intensity", None)):
                raise ConfigError(
                    f"{provider!r} is not a carbon intensity provider", setting="provider"
                )
        self.providers: tuple[Provider, ...] = tuple(providers)
        self.final = final
        everyone = [*self.providers, final]
        self.name: str = getattr(everyone[0], "name", "provider")
        self.live: bool = any(bool(getattr(p, "live", False)) for p in everyone)
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        failures: list[str] = []
        everyone = [*self.providers, self.final]
        for index, provider in enumerate(self.providers):
            name = getattr(provider, "name", type(provider).__name__)
            try:
                result = provider.intensity(key, when)
            except Exception as exc:
                reason = _reason(exc)
                failures.append(f"{name}: {reason}")
                following = getattr(everyone[index + 1], "name", "the next provider")
                self._warn_once(name, reason, following)
                continue
            return self._with(result, failures)
        try:
            result = self.final.intensity(key, when)
        except ProviderError as exc:
            failures.append(f"{getattr(self.final, 'name', 'final')}: {exc.reason}")
            raise ProviderError(
                f"no carbon intensity for zone {key!r}: " + "; ".join(failures),
                provider=self.name,
                kind=exc.kind,
            ) from None
        return self._with(result, failures)

    @staticmethod
    def _with(result: Intensity, failures: list[str]) -> Intensity:
        if not failures:
            return result
        return dataclasses.replace(result, fallbacks=(*failures, *result.fallbacks))

    def _warn_once(self, name: str, reason: str, following: str) -> None:
        with self._lock:
            first = (name, reason) not in self._warned
            if first and len(self._warned) < self._MAX_WARNED:
                self._warned.add((name, reason))
        if first:
            log.warning(
                "meter: carbon intensity from %s failed (%s); falling back to %s",
                name,
                reason,
                following,
            )
        else:
            log.debug("meter: carbon intensity from %s failed again (%s)", name, reason)

    def close(self) -> None:
        for provider in (*self.providers, self.final):
            close = getattr(provider, "close", None)
            if callable(close):
                close()

    def __repr__(self) -> str:
        return f"FallbackChain({list(self.providers)!r}, final={self.final!r})"


def _fresh(exc: ProviderError) -> ProviderError:
    return ProviderError(
        exc.reason,
        provider=exc.provider,
        kind=exc.kind,
        status=exc.status,
        retry_after_s=exc.retry_after_s,
    )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return f"unexpected {type(exc).__name__}: {exc}"[:300]


# -- configuration from the environment --------------------------------------------------------

_LIVE_NAMES = ("electricitymaps", "watttime", "uk")


def provider_from_env(environ: Mapping[str, str] | None = None) -> Provider:
    """The provider the environment asks for.

    * ``METER_CARBON_PROVIDER``: ``embedded`` (default: the yearly table, offline),
      ``constant:<g/kWh>``, or a live API: ``electricitymaps`` (``ELECTRICITYMAPS_TOKEN``),
      ``watttime`` (``WATTTIME_USERNAME``/``WATTTIME_PASSWORD``, optional
      ``METER_WATTTIME_REGION``), ``uk`` (no key; optional ``METER_UK_REGION_ID``).
    * ``METER_CARBON_URL``: the live API's base URL (a mirror, or a local fake in tests).
    * ``METER_CARBON_TTL_S``: how long a live answer is reused (default 300 s).

    A live provider comes back as ``FallbackChain([CachedProvider(live)], EmbeddedProvider())``.
    Bad values raise `ConfigError` naming the variable. Building a provider opens no socket;
    the default does not even import ``requests``.

    >>> provider_from_env({"METER_CARBON_PROVIDER": "constant:120"}).intensity("DE").g_per_kwh
    120.0
    """
    env = _env(environ)
    spec = env.get("METER_CARBON_PROVIDER", "").strip() or "embedded"
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    url = env.get("METER_CARBON_URL", "").strip()

    if name == "embedded" and not arg:
        if url:
            log.warning("meter: METER_CARBON_URL is ignored: METER_CARBON_PROVIDER is embedded")
        return EmbeddedProvider()
    if name == "constant":
        if url:
            log.warning("meter: METER_CARBON_URL is ignored: METER_CARBON_PROVIDER is constant")
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"METER_CARBON_PROVIDER={spec!r}: constant needs a carbon intensity in "
                "gCO2e/kWh >= 0, e.g. constant:250",
                setting="METER_CARBON_PROVIDER",
            )
        return ConstantProvider(value)
    if name == "uk-carbon-intensity":
        name = "uk"
    if name not in _LIVE_NAMES or arg:
        raise ConfigError(
            f"METER_CARBON_PROVIDER={spec!r} is not a carbon intensity provider; use one of "
            "embedded (the default), constant:<g/kWh>, electricitymaps, watttime, uk",
            setting="METER_CARBON_PROVIDER",
        )

    ttl_raw = env.get("METER_CARBON_TTL_S", "").strip()
    ttl = _check_positive(ttl_raw, "METER_CARBON_TTL_S") if ttl_raw else DEFAULT_TTL_S
    options: dict[str, Any] = {}
    if url:
        options["base_url"] = _check_url(url, "METER_CARBON_URL")
    live: Provider
    if name == "electricitymaps":
        live = ElectricityMapsProvider(environ=env, **options)
    elif name == "watttime":
        region = env.get("METER_WATTTIME_REGION", "").strip() or None
        live = WattTimeProvider(environ=env, region=region, **options)
    else:
        region_raw = env.get("METER_UK_REGION_ID", "").strip()
        region_id = None
        if region_raw:
            if not region_raw.isdigit() or int(region_raw) not in UK_REGIONS:
                raise ConfigError(
                    f"METER_UK_REGION_ID={region_raw!r}: UK Carbon Intensity regions are 1..17",
                    setting="METER_UK_REGION_ID",
                )
            region_id = int(region_raw)
        live = UKCarbonIntensityProvider(region_id=region_id, **options)
    return FallbackChain([CachedProvider(live, ttl_s=ttl)], EmbeddedProvider())

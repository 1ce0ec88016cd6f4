"""`WattTimeProvider`: the WattTime API v3 (marginal operating emissions rate, MOER)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from meter.carbon.providers.base import (
    Intensity,
    ProviderError,
    _check_at,
    _check_zone,
    _env,
    _iso_utc,
    _number,
    _parse_time,
    _Secret,
)
from meter.carbon.providers.http import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    MAX_RETRY_AFTER_S,
    HttpClient,
)
from meter.errors import ConfigError

__all__ = ["LBS_PER_MWH_TO_G_PER_KWH", "WATTTIME_REGIONS", "WATTTIME_URL", "WattTimeProvider"]

WATTTIME_URL = "https://api.watttime.org"

#: 1 lb = 0.45359237 kg exactly, so 1 lb/MWh = 453.59237 g / 1000 kWh = 0.45359237 g/kWh.
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237

#: Meter zones (Electricity Maps keys) -> WattTime v3 regions. Deliberately small: pass
#: ``region=`` (or set ``METER_WATTTIME_REGION``) for anything else. ``CAISO_NORTH`` stands for
#: the whole CAISO balancing area here; it is also the region a free WattTime account can read.
WATTTIME_REGIONS: Mapping[str, str] = {
    "US-CAL-CISO": "CAISO_NORTH",
    "US-TEN-TVA": "TVA",
}


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
    (and fall back). ``Intensity.zone`` is the meter zone asked for. One ``deadline_s`` covers a
    lookup's login and data requests together; see `meter.carbon.providers.http` for the other
    bounds.
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
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
        self._http = HttpClient(
            self.name,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            session=session,
            max_retry_after_s=max_retry_after_s,
            deadline_s=deadline_s,
            max_response_bytes=max_response_bytes,
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
        with self._http.lookup():
            return self._intensity(key, when, region)

    def _intensity(self, key: str, when: float | None, region: str) -> Intensity:
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
            raise self._http.malformed("the login answer has no 'token'")
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
            raise self._http.malformed("no 'data' list")
        meta = body.get("meta")
        if not isinstance(meta, dict):
            meta = {}
        units = str(meta.get("units") or "lbs_co2_per_mwh").lower()
        factor = self._CONVERSIONS.get(units)
        if factor is None:
            raise self._http.malformed(f"unexpected units {units!r}")
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
            raise self._http.malformed("no data point has a valid point_time and value")
        return points, factor

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (
            f"WattTimeProvider(username={self.username!r}, password='***', "
            f"base_url={self.base_url!r}, region={self.region!r})"
        )

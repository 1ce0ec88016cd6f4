"""`ElectricityMapsProvider`: the Electricity Maps API v3 (grid average, lifecycle gCO2eq/kWh)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from meter.carbon.providers.base import (
    Intensity,
    _check_at,
    _check_zone,
    _env,
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

__all__ = ["ELECTRICITYMAPS_URL", "ElectricityMapsProvider"]

ELECTRICITYMAPS_URL = "https://api.electricitymap.org"


class ElectricityMapsProvider:
    """Electricity Maps API v3 (https://api.electricitymap.org): ``GET
    /v3/carbon-intensity/latest?zone=Z`` for now and the last hour, ``GET
    /v3/carbon-intensity/history?zone=Z`` (the past 24 h, hourly) for older times, with the
    token in the ``auth-token`` header.

    The token comes from ``token`` or ``ELECTRICITYMAPS_TOKEN`` (``ELECTRICITY_MAPS_TOKEN``
    also works). Zones are Electricity Maps keys, the embedded table's vocabulary. Figures are
    lifecycle gCO2eq/kWh (the API's default ``emissionFactorType``); ``isEstimated`` becomes
    ``Intensity.estimated``. ``timeout_s``, ``retries``, ``max_retry_after_s``, ``deadline_s``
    (for the whole lookup) and ``max_response_bytes`` bound each lookup: see
    `meter.carbon.providers.http`.

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
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
        self._http = HttpClient(
            self.name,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            session=session,
            max_retry_after_s=max_retry_after_s,
            deadline_s=deadline_s,
            max_response_bytes=max_response_bytes,
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
        with self._http.lookup():
            return self._intensity(key, when)

    def _intensity(self, key: str, when: float | None) -> Intensity:
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
            raise self._http.malformed("no 'history' list")
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
                raise self._http.malformed("expected a JSON object")
            return None
        value = _number(item.get("carbonIntensity"))
        try:
            at = _parse_time(item.get("datetime"))
        except (ValueError, TypeError, OverflowError):
            if strict:
                raise self._http.malformed("no valid 'datetime'") from None
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

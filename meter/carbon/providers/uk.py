"""`UKCarbonIntensityProvider`: NESO's UK Carbon Intensity API (Great Britain, no key)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from meter.carbon.providers.base import (
    Intensity,
    _check_at,
    _check_zone,
    _iso_utc,
    _number,
    _parse_time,
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

__all__ = ["UK_CARBON_INTENSITY_URL", "UK_REGIONS", "UKCarbonIntensityProvider"]

UK_CARBON_INTENSITY_URL = "https://api.carbonintensity.org.uk"

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


class _Period(NamedTuple):
    """One half hour of the API's answer: its figure, and whether that is a forecast."""

    start: float
    end: float
    g_per_kwh: float
    estimated: bool


class UKCarbonIntensityProvider:
    """The UK Carbon Intensity API (NESO, https://api.carbonintensity.org.uk, no key).

    Zones: ``GB`` (Electricity Maps' key for Great Britain) is national, or the region
    ``region_id`` when given; ``GB-REGION-<id>`` is a region, ids in `UK_REGIONS` (1..17).
    National: ``GET /intensity`` (the current half hour) and ``GET /intensity/{from}/{to}``;
    the ``actual`` figure when published, else the ``forecast`` (``estimated=True``). Regional:
    ``GET /regional/regionid/{id}`` and ``GET /regional/intensity/{from}/{to}/regionid/{id}``;
    regional figures are forecasts only, so always ``estimated=True``. Northern Ireland is not
    on the GB grid and is not covered. See `meter.carbon.providers.http` for the bounds on a
    lookup (``timeout_s``, ``retries``, ``deadline_s``, ``max_response_bytes``...).
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
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
        self._http = HttpClient(
            self.name,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            session=session,
            max_retry_after_s=max_retry_after_s,
            deadline_s=deadline_s,
            max_response_bytes=max_response_bytes,
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
        with self._http.lookup():
            return self._intensity(when, region)

    def _intensity(self, when: float | None, region: int | None) -> Intensity:
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
            if when is None or found.start <= when < found.end:
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
        covering = [p for p in periods if p.start <= when < p.end]
        if not covering:
            raise self._http.error("no half-hour period covers the requested time", kind="no-data")
        return self._result(covering[0], label)

    def _result(self, period: _Period, zone: str) -> Intensity:
        return Intensity(
            period.g_per_kwh, zone, self.name, period.start, estimated=period.estimated
        )

    def _periods(self, items: Any) -> list[_Period]:
        """``[{"from", "to", "intensity": {"forecast", "actual"?, "index"}}]`` -> periods with
        ``actual`` when it is published, else ``forecast`` (``estimated``)."""
        if not isinstance(items, list):
            raise self._http.malformed("no list of half-hour periods")
        periods = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("intensity"), dict):
                raise self._http.malformed("a period has no 'intensity'")
            try:
                start, end = _parse_time(item.get("from")), _parse_time(item.get("to"))
            except (ValueError, TypeError, OverflowError):
                raise self._http.malformed("a period has no valid 'from'/'to'") from None
            actual = _number(item["intensity"].get("actual"))
            forecast = _number(item["intensity"].get("forecast"))
            if actual is not None:
                periods.append(_Period(start, end, actual, False))
            elif forecast is not None:
                periods.append(_Period(start, end, forecast, True))
        if items and not periods:
            raise self._http.error("no period has an actual or forecast figure", kind="no-data")
        return periods

    def _national(self, body: Any) -> list[_Period]:
        if not isinstance(body, dict):
            raise self._http.malformed("expected a JSON object")
        return self._periods(body.get("data"))

    def _regional(self, body: Any) -> list[_Period]:
        # /regional/regionid/{id}: {"data": [{"regionid", ..., "data": [periods]}]};
        # /regional/intensity/{from}/{to}/regionid/{id}: {"data": {"regionid", ..., "data": [...]}}
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list):
            data = data[0] if data else None
        if not isinstance(data, dict):
            raise self._http.malformed("no region in 'data'")
        return [p._replace(estimated=True) for p in self._periods(data.get("data"))]

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return (
            f"UKCarbonIntensityProvider(base_url={self.base_url!r}, region_id={self.region_id!r})"
        )

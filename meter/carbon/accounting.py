"""Turning joules into CO2e: location-based (grid intensity x PUE), market-based, embodied.

The ledger prices energy as it is sampled: every increment of a device's energy is multiplied
by the intensity in force at that moment (``CarbonRate``, kept current by the `Accountant`), so
a window that spans an intensity change is priced per sample interval, not at one average.

Units: intensities in gCO2e/kWh at the edges; the rate the ledger uses is g per joule with the
PUE folded in (1 kWh = 3.6e6 J).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meter import config
from meter.errors import ConfigError

if TYPE_CHECKING:
    from meter.carbon.providers import Intensity, Provider
    from meter.carbon.zones import ResolvedZone

log = logging.getLogger("meter")

J_PER_KWH = 3.6e6

#: Default PUE: 1.0, i.e. the devices' own energy with no facility overhead added. Set the PUE of
#: your data centre: hyperscalers report about 1.1; the industry average is about 1.56-1.58
#: (Uptime Institute surveys 2021-2024).
DEFAULT_PUE = 1.0
TYPICAL_PUE = {"hyperscale cloud": 1.1, "industry average (Uptime Institute 2021-2024)": 1.58}

#: How often a live provider is asked again (its own cache decides whether that hits the wire).
DEFAULT_REFRESH_S = 60.0


def check_pue(value: Any, setting: str = "pue") -> float:
    try:
        pue = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{setting}={value!r} is not a number; e.g. 1.1", setting=setting
        ) from None
    if not math.isfinite(pue) or pue < 1.0 or pue > 5.0:
        raise ConfigError(
            f"{setting}={value!r} is not a PUE: it is total facility energy / IT energy, so at "
            "least 1.0 (1.1 for hyperscale clouds, about 1.58 on average; at most 5)",
            setting=setting,
        )
    return pue


@dataclass(frozen=True)
class MarketBasis:
    """How the market-based figure is made.

    ``contract``: a contractual emission factor in gCO2e/kWh (supplier mix, PPA; 0 for a fully
    matched certified renewable supply). ``renewable_share``: a certified renewable share
    (0..1) of the consumption: market = location x (1 - share). ``google_cfe``: Google's hourly
    carbon-free-energy share of a Google Cloud region, used the same way.
    """

    kind: str
    value: float

    def g_per_kwh(self, location_g_per_kwh: float) -> float:
        if self.kind == "contract":
            return self.value
        return location_g_per_kwh * (1.0 - self.value)

    def describe(self) -> str:
        if self.kind == "contract":
            return f"contractual factor {self.value:g} g/kWh"
        if self.kind == "renewable_share":
            return f"certified renewable share {self.value:.0%}"
        return f"Google CFE share {self.value:.0%}"


def market_basis(
    factor_g_per_kwh: float | None = None,
    renewable_share: float | None = None,
    cfe_share: float | None = None,
) -> MarketBasis | None:
    """Validate the market-based inputs (at most one of factor and share)."""
    if factor_g_per_kwh is not None and renewable_share is not None:
        raise ConfigError(
            "give either a contractual factor (market_factor_g_per_kwh) or a renewable share "
            "(renewable_share), not both",
            setting="market",
        )
    if factor_g_per_kwh is not None:
        f = _number(factor_g_per_kwh, "market_factor_g_per_kwh")
        if f < 0:
            raise ConfigError(
                f"market_factor_g_per_kwh={factor_g_per_kwh!r} must be >= 0 gCO2e/kWh",
                setting="market_factor_g_per_kwh",
            )
        return MarketBasis("contract", f)
    if renewable_share is not None:
        s = _number(renewable_share, "renewable_share")
        if not 0.0 <= s <= 1.0:
            raise ConfigError(
                f"renewable_share={renewable_share!r} must be a fraction between 0 and 1 "
                "(e.g. 0.8 for 80% certified renewable)",
                setting="renewable_share",
            )
        return MarketBasis("renewable_share", s)
    if cfe_share is not None:
        return MarketBasis("google_cfe", float(cfe_share))
    return None


def _number(value: Any, setting: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}={value!r} is not a number", setting=setting) from None
    if not math.isfinite(f):
        raise ConfigError(f"{setting}={value!r} is not a finite number", setting=setting)
    return f


class CarbonRate:
    """The g-per-joule rates in force now, shared by the ledger's tracks (read lock-free)."""

    __slots__ = ("rates",)

    def __init__(self) -> None:
        #: (location g/J incl. PUE, market g/J incl. PUE or None)
        self.rates: tuple[float, float | None] = (0.0, None)


class Accountant:
    """Keeps the carbon rate current for one zone and remembers what happened (fallbacks)."""

    def __init__(
        self,
        zone: ResolvedZone,
        provider: Provider,
        *,
        pue: float = DEFAULT_PUE,
        market: MarketBasis | None = None,
        refresh_s: float = DEFAULT_REFRESH_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.zone = zone
        self.provider = provider
        self.pue = pue
        self.market = market
        self.refresh_s = refresh_s
        self.wall_clock = wall_clock
        self.rate = CarbonRate()
        self.current: Intensity | None = None
        self.live = bool(getattr(provider, "live", False))
        #: (wall time, "provider: reason") for every fallback or failed lookup; bounded.
        self.events: deque[tuple[float, str]] = deque(maxlen=256)
        #: Why the figure in force is not the first provider's (empty when it is).
        self.state: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._refreshing = False
        self._next_refresh = 0.0
        # The live zone: a cloud region's key maps to its grid zone for live APIs.
        self.lookup_zone = zone.record.grid_zone or zone.key

    # -- keeping the rate current ------------------------------------------------------------

    def start(self) -> None:
        """First lookup. Offline providers answer inline; a live one starts from the embedded
        table's figure (recorded as a fallback until the live answer arrives)."""
        if not self.live:
            self._lookup()
            return
        from meter.carbon.providers import EmbeddedProvider

        try:
            first = EmbeddedProvider().intensity(self.zone.key)
            self._apply(first)
            pending = f"{self.provider.name}: live value pending, embedded figure used"
            self.state = (pending,)
            self._event(pending)
        except Exception as exc:
            self._event(f"embedded: {exc}")
        self.maybe_refresh()

    def maybe_refresh(self) -> None:
        """Called on every sampler tick: cheap unless a refresh is due (then a thread)."""
        now = self.wall_clock()
        if now < self._next_refresh:
            return
        with self._lock:
            if self._refreshing or now < self._next_refresh:
                return
            self._refreshing = True
            self._next_refresh = now + self.refresh_s
        if self.live:
            threading.Thread(target=self._refresh_thread, name="meter-carbon", daemon=True).start()
        else:
            self._refresh_thread()

    def _refresh_thread(self) -> None:
        try:
            self._lookup()
        finally:
            with self._lock:
                self._refreshing = False

    def _lookup(self) -> None:
        try:
            intensity = self.provider.intensity(self.lookup_zone)
        except Exception as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            text = f"{getattr(self.provider, 'name', 'provider')}: {reason}"
            self._event(text)
            self.state = (text,)
            log.warning(
                "meter: carbon intensity lookup failed (%s); keeping the last figure", reason
            )
            return
        for fallback in intensity.fallbacks:
            self._event(fallback)
        self.state = tuple(intensity.fallbacks)
        self._apply(intensity)

    def _apply(self, intensity: Intensity) -> None:
        self.current = intensity
        loc = intensity.g_per_kwh * self.pue / J_PER_KWH
        market = None
        if self.market is not None:
            market = self.market.g_per_kwh(intensity.g_per_kwh) * self.pue / J_PER_KWH
        self.rate.rates = (loc, market)

    def _event(self, text: str) -> None:
        self.events.append((self.wall_clock(), text))

    # -- reporting ---------------------------------------------------------------------------

    def block(self, wall0: float, wall1: float, energy_j: float, co2e_g: float) -> dict[str, Any]:
        """The ``carbon`` block of a `Measurement`."""
        current = self.current
        kwh = energy_j / J_PER_KWH
        mean = co2e_g / (kwh * self.pue) if kwh > 0 else (current.g_per_kwh if current else None)
        # What is in force now (why the figure in use is not the preferred provider's), plus
        # every fallback or failure that happened during the window, each once.
        inside = [t for w, t in list(self.events) if wall0 <= w <= wall1]
        fallbacks = list(dict.fromkeys([*self.state, *inside]))
        block: dict[str, Any] = {
            "zone": self.zone.key,
            "zone_from": self.zone.how,
            "provider": current.source if current else None,
            "intensity_g_per_kwh": mean,
            "pue": self.pue,
            "marginal": bool(current.marginal) if current else False,
            "fallbacks": fallbacks,
        }
        if self.market is not None:
            block["market_basis"] = self.market.describe()
        return block


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Carbon options from ``METER_PUE``, ``METER_MARKET_FACTOR_G_PER_KWH``,
    ``METER_RENEWABLE_SHARE``, ``METER_CARBON_REFRESH_S`` (`meter.config`; bad values fail
    fast)."""
    opts: dict[str, Any] = {}
    pue = config.raw("METER_PUE", environ)
    if pue is not None:
        opts["pue"] = check_pue(pue, "METER_PUE")
    factor = config.value("METER_MARKET_FACTOR_G_PER_KWH", environ)
    if factor is not None:
        opts["market_factor_g_per_kwh"] = factor
    refresh = config.value("METER_CARBON_REFRESH_S", environ)
    if refresh is not None:
        if refresh <= 0:
            raise ConfigError(
                "METER_CARBON_REFRESH_S must be a positive number of seconds, e.g. 60",
                setting="METER_CARBON_REFRESH_S",
            )
        opts["refresh_s"] = refresh
    share = config.value("METER_RENEWABLE_SHARE", environ)
    if share is not None:
        opts["renewable_share"] = share
    return opts


@dataclass(frozen=True)
class ZonePrice:
    """The same energy priced in another zone (location-based, embedded yearly data)."""

    zone: str
    name: str
    g_per_kwh: float
    co2e_g: float
    source: str


def compare_zones(
    energy_j: float, zones: list[str], *, pue: float = DEFAULT_PUE
) -> list[ZonePrice]:
    """What-if: price ``energy_j`` in each zone with the embedded table (offline).

    >>> [p.zone for p in compare_zones(3.6e6, ["FR", "PL"])]   # 1 kWh  # doctest: +SKIP
    ['FR', 'PL']
    """
    from meter.carbon.table import load_table
    from meter.carbon.zones import normalise_zone

    table = load_table()
    pue = check_pue(pue)
    out = []
    for z in zones:
        key = normalise_zone(z, table)
        record = table.get(key)
        assert record is not None
        out.append(
            ZonePrice(
                zone=key,
                name=record.name,
                g_per_kwh=record.g_per_kwh,
                co2e_g=energy_j / J_PER_KWH * record.g_per_kwh * pue,
                source=f"{record.source} {record.year}",
            )
        )
    return out


@dataclass(frozen=True)
class Projection:
    """Per-unit energy scaled to a daily volume (e.g. energy per request x requests per day)."""

    energy_per_unit_j: float
    units_per_day: float
    g_per_kwh: float
    pue: float
    daily_kwh: float
    yearly_kwh: float
    daily_co2e_kg: float
    yearly_co2e_kg: float


def project(
    energy_per_unit_j: float,
    units_per_day: float,
    *,
    g_per_kwh: float | None = None,
    zone: str | None = None,
    pue: float = DEFAULT_PUE,
) -> Projection:
    """Scale a measured per-unit energy to daily and yearly energy and CO2e.

    >>> p = project(50.0, 1_000_000, g_per_kwh=400)   # 50 J per request, 1M requests a day
    >>> round(p.daily_kwh, 2), round(p.yearly_co2e_kg)
    (13.89, 2028)
    """
    e = _number(energy_per_unit_j, "energy_per_unit_j")
    n = _number(units_per_day, "units_per_day")
    if e < 0 or n < 0:
        raise ConfigError("energy per unit and units per day must be >= 0", setting="project")
    pue = check_pue(pue)
    if g_per_kwh is None:
        if zone is None:
            raise ConfigError("project() needs g_per_kwh or zone", setting="project")
        (price,) = compare_zones(J_PER_KWH, [zone], pue=1.0)
        g_per_kwh = price.g_per_kwh
    g = _number(g_per_kwh, "g_per_kwh")
    daily_kwh = e * n / J_PER_KWH
    daily_kg = daily_kwh * g * pue / 1000.0
    return Projection(
        energy_per_unit_j=e,
        units_per_day=n,
        g_per_kwh=g,
        pue=pue,
        daily_kwh=daily_kwh,
        yearly_kwh=daily_kwh * 365.0,
        daily_co2e_kg=daily_kg,
        yearly_co2e_kg=daily_kg * 365.0,
    )

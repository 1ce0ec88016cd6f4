"""What the provider tests share: credentials, a stand-in table, one scenario per live API,
and small provider doubles."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from meter.carbon.providers import (
    ElectricityMapsProvider,
    Intensity,
    ProviderError,
    UKCarbonIntensityProvider,
    WattTimeProvider,
)
from meter.testing.carbon_servers import FakeElectricityMaps, FakeUKCarbonIntensity, FakeWattTime

TOKEN = "em-SECRET-token-4711"
WT_USER = "meter-user"
WT_PASSWORD = "wt-SECRET-password-0815"
WRONG_SECRET = "wrong-SECRET-token"
HOUR = 3600.0


@dataclass(frozen=True)
class Record:
    """Stands in for `meter.carbon.table.ZoneRecord`."""

    key: str
    name: str
    g_per_kwh: float
    year: int
    source: str


class StandInTable:
    """Stands in for `meter.carbon.table.Table` (only ``get`` is used)."""

    def __init__(self, *records: Record) -> None:
        self.records = {r.key: r for r in records}

    def get(self, key: str) -> Record | None:
        return self.records.get(key)


TABLE = StandInTable(
    Record("DE", "Germany", 380.0, 2025, "electricitymaps"),
    Record("US-CAL-CISO", "California ISO", 210.0, 2025, "electricitymaps"),
    Record("GB", "Great Britain", 220.0, 2025, "electricitymaps"),
)


# -- one scenario per live API -----------------------------------------------------------------


@dataclass
class Live:
    fake: Any
    provider: Any
    zone: str
    g_per_kwh: float
    data_prefix: str

    def data_requests(self) -> list[Any]:
        return self.fake.requests_to(self.data_prefix)

    def lookup(self) -> Intensity:
        return self.provider.intensity(self.zone)


KINDS = ["electricitymaps", "watttime", "uk"]


@contextmanager
def live(kind: str, **options: Any) -> Iterator[Live]:
    options.setdefault("timeout_s", 1.0)
    options.setdefault("retries", 2)
    provider: Any
    if kind == "electricitymaps":
        with FakeElectricityMaps(token=TOKEN, intensity=420.0) as em:
            provider = ElectricityMapsProvider(TOKEN, base_url=em.url, **options)
            yield Live(em, provider, "DE", 420.0, "/v3/")
    elif kind == "watttime":
        with FakeWattTime(WT_USER, WT_PASSWORD, moer=1000.0) as wt:
            provider = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=wt.url, **options)
            yield Live(wt, provider, "US-CAL-CISO", 1000.0 * 0.45359237, "/v3/")
    else:
        with FakeUKCarbonIntensity(forecast=190.0, actual=175.0) as uk:
            provider = UKCarbonIntensityProvider(base_url=uk.url, **options)
            yield Live(uk, provider, "GB", 175.0, "/")


def elapsed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    try:
        result: Any = fn()
    except Exception as exc:
        result = exc
    return result, time.perf_counter() - start


# -- provider doubles --------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """A provider that counts its calls and can be told to fail."""

    name = "counting"
    live = True

    def __init__(self, error: ProviderError | None = None) -> None:
        self.calls = 0
        self.error = error

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Intensity(float(self.calls), zone, "counting", at or 0.0)

"""Carbon-intensity providers against local fakes of the real APIs (127.0.0.1 only).

Each live provider is driven through its API's real request and response shapes and its
failures (401, 429 with Retry-After, 500, timeouts, malformed JSON, an HTML page); then the
cache, the fallback chain, secrets hygiene and configuration from the environment.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from meter.carbon.providers import (
    LBS_PER_MWH_TO_G_PER_KWH,
    CachedProvider,
    ConstantProvider,
    ElectricityMapsProvider,
    EmbeddedProvider,
    FallbackChain,
    Intensity,
    ProviderError,
    UKCarbonIntensityProvider,
    WattTimeProvider,
    provider_from_env,
)
from meter.errors import ConfigError
from meter.testing.carbon_servers import (
    FakeElectricityMaps,
    FakeUKCarbonIntensity,
    FakeWattTime,
)

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


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's proxy settings must not route 127.0.0.1 elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


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


# -- Electricity Maps --------------------------------------------------------------------------


def test_electricitymaps_latest_is_parsed_and_sends_the_auth_token() -> None:
    with FakeElectricityMaps(token=TOKEN, intensity=420.0, is_estimated=True) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        result = em.intensity("DE")
        (request,) = fake.requests
    assert result.g_per_kwh == 420.0
    assert (result.zone, result.source, result.marginal, result.estimated) == (
        "DE",
        "electricitymaps",
        False,
        True,
    )
    assert result.at % HOUR == 0 and time.time() - result.at < 2 * HOUR
    assert request.path == "/v3/carbon-intensity/latest"
    assert request.query == {"zone": "DE"}
    assert request.headers["auth-token"] == TOKEN


def test_electricitymaps_history_gives_the_hour_covering_the_time() -> None:
    hour = 1_800_000_000.0  # a whole hour; "now" is ten minutes into it
    now = hour + 600.0
    with FakeElectricityMaps(token=TOKEN, clock=lambda: now) as fake:
        fake.set_history("DE", [(hour - i * HOUR, 100.0 + i) for i in range(24)])
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url, wall_clock=lambda: now)
        five_hours_ago = em.intensity("DE", at=hour - 5 * HOUR + 1200)
        assert [r.path for r in fake.requests] == ["/v3/carbon-intensity/history"]
        # Within the hour but before the latest's hour: latest, then the history.
        last_hour = em.intensity("DE", at=hour - 60)
        paths = [r.path.rsplit("/", 1)[1] for r in fake.requests]
    assert (five_hours_ago.g_per_kwh, five_hours_ago.at) == (105.0, hour - 5 * HOUR)
    assert (last_hour.g_per_kwh, last_hour.at) == (101.0, hour - HOUR)
    assert paths == ["history", "latest", "history"]
    # Inside the latest hour, latest answers alone.
    with FakeElectricityMaps(token=TOKEN, intensity=99.0, clock=lambda: now) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url, wall_clock=lambda: now)
        assert em.intensity("DE", at=hour + 300).g_per_kwh == 99.0
        assert [r.path for r in fake.requests] == ["/v3/carbon-intensity/latest"]


def test_electricitymaps_times_beyond_the_history_fail_without_a_request() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        with pytest.raises(ProviderError, match="past 24 h") as info:
            em.intensity("DE", at=time.time() - 3 * 86400)
        assert fake.requests == []
    assert info.value.kind == "no-data"


def test_electricitymaps_null_intensity_is_no_data() -> None:
    body = {"zone": "DE", "carbonIntensity": None, "datetime": "2025-01-01T00:00:00.000Z"}
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.fail_next(200, body=body)
        with pytest.raises(ProviderError, match="carbonIntensity is None") as info:
            ElectricityMapsProvider(TOKEN, base_url=fake.url).intensity("DE")
    assert info.value.kind == "no-data"


def test_electricitymaps_token_from_either_variable() -> None:
    for variable in ("ELECTRICITYMAPS_TOKEN", "ELECTRICITY_MAPS_TOKEN"):
        em = ElectricityMapsProvider(environ={variable: TOKEN})
        assert em._token.get() == TOKEN
    with pytest.raises(ConfigError, match="ELECTRICITYMAPS_TOKEN") as info:
        ElectricityMapsProvider(environ={})
    assert info.value.setting == "ELECTRICITYMAPS_TOKEN"


# -- WattTime ----------------------------------------------------------------------------------


def test_watttime_converts_lbs_per_mwh_and_flags_marginal() -> None:
    with FakeWattTime(WT_USER, WT_PASSWORD, moer=1000.0) as fake:
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=fake.url)
        result = wt.intensity("US-CAL-CISO")
        login, forecast = fake.requests
        token = fake.issued_tokens[0]
    assert result.g_per_kwh == pytest.approx(453.59237)
    assert result.g_per_kwh == pytest.approx(1000.0 * LBS_PER_MWH_TO_G_PER_KWH)
    assert (result.marginal, result.estimated, result.source) == (True, True, "watttime")
    assert result.zone == "US-CAL-CISO"
    assert result.at % 300 == 0
    basic = base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
    assert login.path == "/login" and login.headers["authorization"] == f"Basic {basic}"
    assert forecast.path == "/v3/forecast"
    assert forecast.headers["authorization"] == f"Bearer {token}"
    assert forecast.query == {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "horizon_hours": "0",
    }


def test_watttime_historical_gives_the_point_at_the_time() -> None:
    now = time.time()
    two_hours_ago = now - 2 * HOUR
    point = two_hours_ago - two_hours_ago % 300
    with FakeWattTime(WT_USER, WT_PASSWORD, moer=900.0) as fake:
        fake.set_history("TVA", [(point - 300, 500.0), (point, 600.0), (point + 300, 700.0)])
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=fake.url, region="TVA")
        result = wt.intensity("DE", at=point + 100)
        request = fake.requests[-1]
    assert result.g_per_kwh == pytest.approx(600.0 * 0.45359237)
    assert (result.at, result.marginal, result.estimated) == (point, True, False)
    assert request.path == "/v3/historical"
    assert request.query["region"] == "TVA" and request.query["signal_type"] == "co2_moer"
    assert request.query["start"] < request.query["end"]


def test_watttime_keeps_its_token_and_logs_in_again_once_on_401() -> None:
    with FakeWattTime(WT_USER, WT_PASSWORD) as fake:
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=fake.url)
        wt.intensity("US-CAL-CISO")
        wt.intensity("US-CAL-CISO")
        assert fake.logins == 1
        fake.expire_tokens()
        assert wt.intensity("US-CAL-CISO").g_per_kwh > 0
        assert fake.logins == 2
        # A 401 that persists after the new login fails, naming the settings.
        fake.fail_next(401, times=2)
        with pytest.raises(ProviderError, match="WATTTIME_USERNAME") as info:
            wt.intensity("US-CAL-CISO")
        assert fake.logins == 3
    assert info.value.kind == "auth"


def test_watttime_region_comes_from_the_argument_or_the_mapping() -> None:
    with FakeWattTime(WT_USER, WT_PASSWORD) as fake:
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=fake.url)
        with pytest.raises(ProviderError, match=r"region=") as info:
            wt.intensity("DE")
        assert fake.requests == []
        assert info.value.kind == "zone"
        pinned = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=fake.url, region="PJM_NJ")
        pinned.intensity("DE")
        assert fake.requests[-1].query["region"] == "PJM_NJ"


def test_watttime_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigError, match="WATTTIME_USERNAME and WATTTIME_PASSWORD"):
        WattTimeProvider(environ={})
    with pytest.raises(ConfigError, match="WATTTIME_PASSWORD") as info:
        WattTimeProvider(environ={"WATTTIME_USERNAME": "u"})
    assert info.value.setting == "WATTTIME_PASSWORD"
    wt = WattTimeProvider(environ={"WATTTIME_USERNAME": "u", "WATTTIME_PASSWORD": "p-w-d"})
    assert wt.username == "u"


# -- UK Carbon Intensity -----------------------------------------------------------------------


def test_uk_national_uses_actual_else_forecast() -> None:
    with FakeUKCarbonIntensity(forecast=190.0, actual=175.0) as fake:
        uk = UKCarbonIntensityProvider(base_url=fake.url)
        settled = uk.intensity("GB")
        fake.set_national(190.0, None)
        pending = uk.intensity("GB")
        assert [r.path for r in fake.requests] == ["/intensity", "/intensity"]
        assert "auth-token" not in fake.requests[0].headers
    assert (settled.g_per_kwh, settled.estimated, settled.zone) == (175.0, False, "GB")
    assert (pending.g_per_kwh, pending.estimated) == (190.0, True)
    assert settled.at % 1800 == 0 and settled.source == "uk-carbon-intensity"


def test_uk_regional_is_a_forecast_by_zone_or_region_id() -> None:
    with FakeUKCarbonIntensity(forecast=190.0, actual=175.0, regional={13: 99.0}) as fake:
        by_zone = UKCarbonIntensityProvider(base_url=fake.url).intensity("GB-REGION-13")
        by_id = UKCarbonIntensityProvider(base_url=fake.url, region_id=13).intensity("GB")
        assert [r.path for r in fake.requests] == ["/regional/regionid/13"] * 2
    for result in (by_zone, by_id):
        assert (result.g_per_kwh, result.estimated, result.zone) == (99.0, True, "GB-REGION-13")


def test_uk_history_national_and_regional() -> None:
    now = time.time()
    then = now - 5 * HOUR
    start = then - then % 1800
    with FakeUKCarbonIntensity(forecast=190.0, actual=175.0, regional={13: 99.0}) as fake:
        fake.set_national(150.0, 140.0, at=then)
        fake.set_regional(13, 77.0, at=then)
        uk = UKCarbonIntensityProvider(base_url=fake.url)
        national = uk.intensity("GB", at=then)
        regional = uk.intensity("GB-REGION-13", at=then)
        national_path, regional_path = (r.path for r in fake.requests)
    assert (national.g_per_kwh, national.at, national.estimated) == (140.0, start, False)
    assert (regional.g_per_kwh, regional.at, regional.estimated) == (77.0, start, True)
    assert national_path.startswith("/intensity/") and national_path.count("/") == 3
    assert regional_path.startswith("/regional/intensity/")
    assert regional_path.endswith("/regionid/13")


def test_uk_other_zones_are_not_covered() -> None:
    uk = UKCarbonIntensityProvider(base_url="http://127.0.0.1:9")
    for zone in ("GB-NIR", "FR", "GB-REGION-18"):
        with pytest.raises(ProviderError, match="Great Britain") as info:
            uk.intensity(zone)
        assert info.value.kind == "zone"
    with pytest.raises(ConfigError, match=r"1\.\.17"):
        UKCarbonIntensityProvider(region_id=18)


# -- shared HTTP behaviour, for every live API -------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_happy_path_shape(kind: str) -> None:
    with live(kind) as api:
        result = api.lookup()
    assert result.g_per_kwh == pytest.approx(api.g_per_kwh)
    assert result.zone == api.zone
    assert result.fallbacks == ()
    assert result.marginal is (kind == "watttime")


@pytest.mark.parametrize("kind", KINDS)
def test_401_fails_at_once_saying_what_to_check(kind: str) -> None:
    with live(kind) as api:
        if kind == "electricitymaps":
            api.provider = ElectricityMapsProvider("wrong-token", base_url=api.fake.url)
            hint = "ELECTRICITYMAPS_TOKEN"
        elif kind == "watttime":
            api.provider = WattTimeProvider(WT_USER, "wrong-password", base_url=api.fake.url)
            hint = "WATTTIME_PASSWORD"
        else:
            api.fake.fail_next(403)
            hint = "needs no key"
        error, seconds = elapsed(api.lookup)
        assert len(api.fake.requests) == 1  # no retry
    assert isinstance(error, ProviderError)
    assert error.kind == "auth" and error.status in (401, 403)
    assert hint in str(error)
    assert seconds < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_is_honoured(kind: str) -> None:
    with live(kind) as api:
        api.fake.fail_next(429, retry_after=1)
        result, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 2
    assert isinstance(result, Intensity), result
    assert 0.95 <= seconds < 3.0


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_over_the_cap_fails_now(kind: str) -> None:
    with live(kind) as api:
        api.fake.fail_next(429, retry_after=120)
        error, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 1
    assert isinstance(error, ProviderError)
    assert (error.kind, error.status, error.retry_after_s) == ("rate-limited", 429, 120.0)
    assert "Retry-After 120 s" in error.reason
    assert seconds < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_500_then_success_is_retried(kind: str) -> None:
    with live(kind) as api:
        api.fake.fail_next(500)
        result = api.lookup()
        assert len(api.data_requests()) == 2
    assert result.g_per_kwh == pytest.approx(api.g_per_kwh)


@pytest.mark.parametrize("kind", KINDS)
def test_500s_stop_after_the_retries(kind: str) -> None:
    with live(kind, retries=2) as api:
        api.fake.fail_next(503, times=10)
        error, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 3
    assert isinstance(error, ProviderError)
    assert error.kind == "server" and "HTTP 503" in error.reason and "3 attempts" in error.reason
    assert seconds < 2.0  # backoff 0.25 s + 0.5 s


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_fails_within_the_budget(kind: str) -> None:
    with live(kind, timeout_s=0.3, retries=1) as api:
        if kind == "watttime":
            api.provider._login()  # the login is not what this test times
        api.fake.hang_next(5.0, times=5)
        error, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 2
    assert isinstance(error, ProviderError)
    assert error.kind == "timeout" and "timed out after 0.3 s" in error.reason
    assert seconds < 0.3 * 2 + 0.25 + 0.6


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_json(kind: str) -> None:
    with live(kind) as api:
        api.fake.malformed_next()
        error, _ = elapsed(api.lookup)
        assert len(api.data_requests()) == 1
    assert isinstance(error, ProviderError)
    assert error.kind == "malformed"
    assert "malformed response" in str(error) and "not valid JSON" in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_html_error_page(kind: str) -> None:
    with live(kind) as api:
        api.fake.html_next(200)  # a captive portal
        error, _ = elapsed(api.lookup)
        assert isinstance(error, ProviderError)
        assert error.kind == "malformed" and "HTML page" in error.reason
        assert "Sign in to the network" in error.reason
        api.fake.html_next(502)  # a proxy's error page: a server error, retried
        assert api.lookup().g_per_kwh == pytest.approx(api.g_per_kwh)


def test_connection_refused_fails_fast() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    em = ElectricityMapsProvider(TOKEN, base_url=f"http://127.0.0.1:{port}", retries=1)
    error, seconds = elapsed(lambda: em.intensity("DE"))
    assert isinstance(error, ProviderError) and error.kind == "connection"
    assert "2 attempts" in error.reason
    assert seconds < 2.0


def test_redirects_are_not_followed() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.fail_next(302)
        with pytest.raises(ProviderError, match="HTTP 302") as info:
            ElectricityMapsProvider(TOKEN, base_url=fake.url).intensity("DE")
        assert len(fake.requests) == 1
    assert info.value.kind == "http"


# -- offline providers -------------------------------------------------------------------------


def test_constant_provider() -> None:
    result = ConstantProvider(250.0).intensity("DE", at=1_700_000_000.0)
    assert result == Intensity(250.0, "custom", "constant", 1_700_000_000.0)
    assert ConstantProvider(0, zone="onsite").intensity("FR").zone == "onsite"
    for bad in (-5, math.nan, math.inf, "250", True, None):
        with pytest.raises(ConfigError, match="g_per_kwh"):
            ConstantProvider(bad)  # type: ignore[arg-type]


def test_embedded_provider_with_a_table() -> None:
    embedded = EmbeddedProvider(table=TABLE)
    result = embedded.intensity("DE", at=1_700_000_000.0)
    assert (result.g_per_kwh, result.zone, result.at) == (380.0, "DE", 1_700_000_000.0)
    assert result.source == "embedded:electricitymaps-2025"
    assert embedded.live is False
    with pytest.raises(ProviderError, match="not in the embedded table") as info:
        embedded.intensity("XX")
    assert info.value.kind == "zone"


def test_bad_lookup_arguments_fail_fast() -> None:
    for zone in ("", "  ", None, 42):
        with pytest.raises(ConfigError, match="zone"):
            ConstantProvider(1.0).intensity(zone)  # type: ignore[arg-type]
    for at in (math.nan, "now", True):
        with pytest.raises(ConfigError, match="wall time"):
            ConstantProvider(1.0).intensity("DE", at=at)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timeout_s"):
        ElectricityMapsProvider(TOKEN, timeout_s=0)
    with pytest.raises(ConfigError, match="retries"):
        ElectricityMapsProvider(TOKEN, retries=-1)
    with pytest.raises(ConfigError, match="http"):
        ElectricityMapsProvider(TOKEN, base_url="api.electricitymap.org")


# -- CachedProvider ----------------------------------------------------------------------------


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


def test_cache_50_lookups_inside_the_ttl_make_one_request() -> None:
    clock = Clock()
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        cached = CachedProvider(em, ttl_s=300.0, clock=clock, wall_clock=lambda: 1_800_000_000.0)
        results = {cached.intensity("DE") for _ in range(50)}
        assert len(fake.requests) == 1 and len(results) == 1
        clock.now += 299.0
        cached.intensity("DE")
        assert len(fake.requests) == 1
        clock.now += 2.0
        cached.intensity("DE")
        assert len(fake.requests) == 2
        cached.intensity("FR")  # zones are cached apart
        assert len(fake.requests) == 3
    assert cached.name == "electricitymaps" and cached.live is True


def test_cache_buckets_by_the_time_asked_for() -> None:
    inner = Counting()
    cached = CachedProvider(inner, ttl_s=300.0, clock=Clock(), wall_clock=lambda: 3000.0)
    for at in (2700.0, 2800.0, 2999.9, None):
        cached.intensity("DE", at=at)
    # 2700..2999.9 share a 300 s bucket; None is now, 3000, the start of the next one.
    assert inner.calls == 2
    cached.intensity("DE", at=3100.0)
    assert inner.calls == 2


def test_cache_keeps_a_failure_for_a_while() -> None:
    clock = Clock()
    inner = Counting(ProviderError("down", provider="counting", kind="server"))
    cached = CachedProvider(inner, ttl_s=300.0, clock=clock, error_ttl_s=60.0)
    for _ in range(10):
        with pytest.raises(ProviderError, match="down"):
            cached.intensity("DE", at=0.0)
    assert inner.calls == 1
    clock.now += 61.0
    with pytest.raises(ProviderError):
        cached.intensity("DE", at=0.0)
    assert inner.calls == 2


def test_cache_holds_a_rate_limit_for_its_retry_after() -> None:
    clock = Clock()
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        cached = CachedProvider(em, ttl_s=300.0, clock=clock, error_ttl_s=10.0)
        fake.fail_next(429, retry_after=120)
        for _ in range(3):
            with pytest.raises(ProviderError, match="Retry-After"):
                cached.intensity("DE")
        clock.now += 100.0
        with pytest.raises(ProviderError):
            cached.intensity("DE")
        assert len(fake.requests) == 1
        clock.now += 21.0
        assert cached.intensity("DE").g_per_kwh == 420.0
        assert len(fake.requests) == 2


def test_cache_concurrent_misses_make_one_request() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.hang_next(0.3)  # a slow answer, so that every thread misses at once
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        cached = CachedProvider(em, wall_clock=lambda: 1_800_000_000.0)
        results: list[Intensity] = []
        barrier = threading.Barrier(8)

        def lookup() -> None:
            barrier.wait()
            results.append(cached.intensity("DE"))

        threads = [threading.Thread(target=lookup) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(fake.requests) == 1
    assert len(results) == 8 and len(set(results)) == 1


def test_cache_validates_its_settings() -> None:
    for ttl in (0, -1, math.nan):
        with pytest.raises(ConfigError, match="ttl_s"):
            CachedProvider(ConstantProvider(1.0), ttl_s=ttl)
    with pytest.raises(ConfigError, match="not a carbon intensity provider"):
        CachedProvider(object())  # type: ignore[arg-type]


# -- FallbackChain -----------------------------------------------------------------------------


def test_chain_records_each_failure_and_ends_at_the_embedded_table() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider("revoked-token", base_url=fake.url)
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=fake.url)  # no region for DE
        chain = FallbackChain(
            [CachedProvider(em), CachedProvider(wt)], EmbeddedProvider(table=TABLE)
        )
        result = chain.intensity("DE")
    assert result.source == "embedded:electricitymaps-2025" and result.g_per_kwh == 380.0
    assert len(result.fallbacks) == 2
    assert result.fallbacks[0].startswith("electricitymaps: HTTP 401 unauthorized")
    assert "ELECTRICITYMAPS_TOKEN" in result.fallbacks[0]
    assert result.fallbacks[1].startswith("watttime: no WattTime region is known for zone 'DE'")
    assert chain.live is True and chain.name == "electricitymaps"


def test_chain_uses_the_first_provider_that_answers() -> None:
    with FakeElectricityMaps(token=TOKEN, intensity=333.0) as fake:
        chain = FallbackChain(
            [ElectricityMapsProvider(TOKEN, base_url=fake.url)], EmbeddedProvider(table=TABLE)
        )
        result = chain.intensity("DE")
    assert (result.source, result.g_per_kwh, result.fallbacks) == ("electricitymaps", 333.0, ())


def test_chain_warns_once_per_provider_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="meter")
    down = Counting(ProviderError("HTTP 503", provider="counting", kind="server"))
    chain = FallbackChain([down], ConstantProvider(1.0))
    for _ in range(5):
        assert chain.intensity("DE").fallbacks == ("counting: HTTP 503",)
    down.error = ProviderError("timed out", provider="counting", kind="timeout")
    chain.intensity("DE")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "counting failed (HTTP 503); falling back to constant" in warnings[0]
    assert "timed out" in warnings[1]


def test_chain_falls_back_on_unexpected_errors_too() -> None:
    class Broken:
        name = "broken"

        def intensity(self, zone: str, at: float | None = None) -> Intensity:
            raise RuntimeError("bug")

    result = FallbackChain([Broken()], ConstantProvider(5.0)).intensity("DE")
    assert result.fallbacks == ("broken: unexpected RuntimeError: bug",)


def test_chain_fails_with_every_reason_when_the_final_provider_fails() -> None:
    down = Counting(ProviderError("HTTP 500", provider="counting", kind="server"))
    chain = FallbackChain([down], EmbeddedProvider(table=TABLE))
    with pytest.raises(ProviderError) as info:
        chain.intensity("XX")
    assert "counting: HTTP 500" in str(info.value)
    assert "embedded: zone 'XX' is not in the embedded table" in str(info.value)


def test_chain_keeps_the_answering_providers_own_fallbacks() -> None:
    inner = FallbackChain([Counting(ProviderError("a", kind="server"))], ConstantProvider(2.0))
    outer = FallbackChain([Counting(ProviderError("b", kind="server"))], inner)
    assert outer.intensity("DE").fallbacks == ("counting: b", "counting: a")


# -- secrets -----------------------------------------------------------------------------------


def test_secrets_never_appear_in_errors_reprs_logs_or_results(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    texts: list[str] = []
    secrets = [TOKEN, WT_PASSWORD, WRONG_SECRET]
    secrets.append(base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode())

    def record(fn: Callable[[], Any]) -> None:
        try:
            texts.append(repr(fn()))
        except Exception as exc:
            texts.extend([str(exc), repr(exc), repr(exc.args), getattr(exc, "reason", "")])
            texts.extend(traceback.format_exception(type(exc), exc, exc.__traceback__))
            cause = exc.__cause__ or exc.__context__
            texts.append(repr(cause))

    fast: dict[str, Any] = {"timeout_s": 0.3, "retries": 1}
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url, **fast)
        bad = ElectricityMapsProvider(WRONG_SECRET, base_url=fake.url, **fast)
        chain = FallbackChain([CachedProvider(bad)], CachedProvider(em))
        texts += [repr(em), repr(bad), repr(chain), str(vars(em))]
        record(lambda: em.intensity("DE"))
        record(lambda: bad.intensity("DE"))
        record(lambda: chain.intensity("DE"))
        fake.fail_next(404, body={"error": f"no such token {TOKEN}"})  # an echoing server
        record(lambda: em.intensity("DE"))
        for inject in (
            lambda: fake.fail_next(429, retry_after=60),
            lambda: fake.fail_next(500, times=2),
            lambda: fake.hang_next(2.0, times=2),
            fake.malformed_next,
            fake.html_next,
        ):
            inject()
            record(lambda: em.intensity("DE"))
    with FakeWattTime(WT_USER, WT_PASSWORD) as wt_fake:
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=wt_fake.url, **fast)
        texts += [repr(wt), str(vars(wt))]
        record(lambda: wt.intensity("US-CAL-CISO"))
        wt_fake.expire_tokens()
        record(lambda: wt.intensity("US-CAL-CISO"))
        wt_fake.fail_next(401, times=2)
        record(lambda: wt.intensity("US-CAL-CISO"))
        wt_fake.fail_next(500, times=2)
        record(lambda: wt.intensity("US-CAL-CISO"))
        record(
            lambda: WattTimeProvider(WT_USER, WRONG_SECRET, base_url=wt_fake.url).intensity(
                "US-CAL-CISO"
            )
        )
        secrets += wt_fake.issued_tokens
        assert len(wt_fake.issued_tokens) == 3
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    haystack = "\n".join(texts)
    assert "HTTP 404 (no such token ***)" in haystack  # scrubbed, not dropped
    for secret in secrets:
        assert secret not in haystack


# -- configuration from the environment --------------------------------------------------------


def test_default_is_the_embedded_table_and_opens_no_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the default carbon configuration opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for env in ({}, {"METER_CARBON_PROVIDER": "embedded"}, {"METER_CARBON_PROVIDER": " "}):
        provider = provider_from_env(env)
        assert isinstance(provider, EmbeddedProvider)
        assert getattr(provider, "live", None) is False
    # What the default does on a lookup, with the stand-in table.
    assert EmbeddedProvider(table=TABLE).intensity("DE").g_per_kwh == 380.0
    # Building a live chain opens nothing either.
    chain = provider_from_env(
        {"METER_CARBON_PROVIDER": "electricitymaps", "ELECTRICITYMAPS_TOKEN": TOKEN}
    )
    assert isinstance(chain, FallbackChain)


def test_default_lookup_with_the_real_table_opens_no_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = pytest.importorskip("meter.carbon.table")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the embedded table opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    result = provider_from_env({}).intensity(table.WORLD_KEY)
    assert result.g_per_kwh > 0 and result.source.startswith("embedded:")


def test_default_does_not_import_requests() -> None:
    code = (
        "import sys\n"
        "from meter.carbon.providers import provider_from_env\n"
        "provider_from_env({})\n"
        "provider_from_env({'METER_CARBON_PROVIDER': 'electricitymaps',"
        " 'ELECTRICITYMAPS_TOKEN': 'x-y-z'})\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3'))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("env", "fake", "zone"),
    [
        (
            {"METER_CARBON_PROVIDER": "electricitymaps", "ELECTRICITYMAPS_TOKEN": TOKEN},
            lambda: FakeElectricityMaps(token=TOKEN, intensity=420.0),
            "DE",
        ),
        (
            {
                "METER_CARBON_PROVIDER": "watttime",
                "WATTTIME_USERNAME": WT_USER,
                "WATTTIME_PASSWORD": WT_PASSWORD,
                "METER_WATTTIME_REGION": "CAISO_NORTH",
            },
            lambda: FakeWattTime(WT_USER, WT_PASSWORD, moer=420.0 / 0.45359237),
            "DE",
        ),
        (
            {"METER_CARBON_PROVIDER": "uk", "METER_UK_REGION_ID": "13"},
            lambda: FakeUKCarbonIntensity(regional={13: 420.0}),
            "GB",
        ),
    ],
    ids=KINDS,
)
def test_live_provider_from_env(env: dict[str, str], fake: Callable[[], Any], zone: str) -> None:
    with fake() as server:
        url = {"METER_CARBON_URL": server.url, "METER_CARBON_TTL_S": "60"}
        chain = provider_from_env({**env, **url})
        assert isinstance(chain, FallbackChain) and chain.live is True
        (cached,) = chain.providers
        assert isinstance(cached, CachedProvider) and cached.ttl_s == 60.0
        assert isinstance(chain.final, EmbeddedProvider)
        result = chain.intensity(zone)
        assert result.fallbacks == ()
        assert result.g_per_kwh == pytest.approx(420.0)
        chain.intensity(zone)  # cached
        assert len(server.requests_to("/v3/" if zone == "DE" else "/")) == 1


def test_constant_from_env() -> None:
    provider = provider_from_env({"METER_CARBON_PROVIDER": "constant:120.5"})
    assert isinstance(provider, ConstantProvider) and provider.g_per_kwh == 120.5


@pytest.mark.parametrize(
    ("env", "setting", "words"),
    [
        ({"METER_CARBON_PROVIDER": "constant:-5"}, "METER_CARBON_PROVIDER", "constant:250"),
        ({"METER_CARBON_PROVIDER": "constant:abc"}, "METER_CARBON_PROVIDER", ">= 0"),
        ({"METER_CARBON_PROVIDER": "constant:nan"}, "METER_CARBON_PROVIDER", ">= 0"),
        ({"METER_CARBON_PROVIDER": "constant"}, "METER_CARBON_PROVIDER", "constant:250"),
        ({"METER_CARBON_PROVIDER": "electricmaps"}, "METER_CARBON_PROVIDER", "use one of"),
        ({"METER_CARBON_PROVIDER": "embedded:x"}, "METER_CARBON_PROVIDER", "use one of"),
        ({"METER_CARBON_PROVIDER": "electricitymaps"}, "ELECTRICITYMAPS_TOKEN", "set"),
        ({"METER_CARBON_PROVIDER": "watttime"}, "WATTTIME_USERNAME", "WATTTIME_PASSWORD"),
        (
            {"METER_CARBON_PROVIDER": "uk", "METER_CARBON_TTL_S": "-1"},
            "METER_CARBON_TTL_S",
            "> 0",
        ),
        ({"METER_CARBON_PROVIDER": "uk", "METER_CARBON_TTL_S": "0"}, "METER_CARBON_TTL_S", "> 0"),
        (
            {"METER_CARBON_PROVIDER": "uk", "METER_CARBON_TTL_S": "soon"},
            "METER_CARBON_TTL_S",
            "not a number",
        ),
        ({"METER_CARBON_PROVIDER": "uk", "METER_CARBON_URL": "ftp://x"}, "METER_CARBON_URL", "URL"),
        (
            {"METER_CARBON_PROVIDER": "uk", "METER_UK_REGION_ID": "99"},
            "METER_UK_REGION_ID",
            "1..17",
        ),
    ],
)
def test_bad_configuration_fails_fast(env: dict[str, str], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        provider_from_env(env)
    assert info.value.setting == setting
    assert setting in str(info.value) and words in str(info.value)

"""`UKCarbonIntensityProvider` against a local fake of the UK Carbon Intensity API."""

from __future__ import annotations

import time

import pytest

from meter.carbon.providers import ProviderError, UKCarbonIntensityProvider
from meter.errors import ConfigError
from meter.testing.carbon_servers import FakeUKCarbonIntensity
from tests.meter.carbon.providers.helpers import HOUR


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

"""`ElectricityMapsProvider` against a local fake of the Electricity Maps API v3."""

from __future__ import annotations

import time

import pytest

from meter.carbon.providers import ElectricityMapsProvider, ProviderError
from meter.errors import ConfigError
from meter.testing.carbon_servers import FakeElectricityMaps
from tests.meter.carbon.providers.helpers import HOUR, TOKEN


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

"""`WattTimeProvider` against a local fake of the WattTime API v3: login, MOER, regions."""

from __future__ import annotations

import base64
import time

import pytest

from meter.carbon.providers import LBS_PER_MWH_TO_G_PER_KWH, ProviderError, WattTimeProvider
from meter.errors import ConfigError
from meter.testing.carbon_servers import FakeWattTime
from tests.meter.carbon.providers.helpers import HOUR, WT_PASSWORD, WT_USER


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

"""`provider_from_env`: the default (offline, no socket, no requests), live providers and
bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from meter.carbon.providers import (
    CachedProvider,
    ConstantProvider,
    EmbeddedProvider,
    FallbackChain,
    provider_from_env,
)
from meter.errors import ConfigError
from meter.testing.carbon_servers import FakeElectricityMaps, FakeUKCarbonIntensity, FakeWattTime
from tests.meter.carbon.providers.helpers import KINDS, TABLE, TOKEN, WT_PASSWORD, WT_USER


@pytest.mark.usefixtures("no_network")
def test_default_is_the_embedded_table_and_opens_no_socket() -> None:
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


@pytest.mark.usefixtures("no_network")
def test_default_lookup_with_the_real_table_opens_no_socket() -> None:
    table = pytest.importorskip("meter.carbon.table")
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


def test_the_bounds_on_a_live_lookup_from_env() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        env = {
            "METER_CARBON_PROVIDER": "electricitymaps",
            "ELECTRICITYMAPS_TOKEN": TOKEN,
            "METER_CARBON_URL": fake.url,
        }
        small = provider_from_env({**env, "METER_CARBON_MAX_RESPONSE_BYTES": "100"})
        (reason,) = small.intensity("DE").fallbacks
        assert "over the 100 byte size cap" in reason
        fake.trickle_next(0.05)
        short = provider_from_env({**env, "METER_CARBON_DEADLINE_S": "0.5"})
        (reason,) = short.intensity("DE").fallbacks
        assert "within the 0.5 s deadline" in reason


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
        (
            {"METER_CARBON_PROVIDER": "uk", "METER_CARBON_DEADLINE_S": "0"},
            "METER_CARBON_DEADLINE_S",
            "> 0",
        ),
        (
            {"METER_CARBON_PROVIDER": "uk", "METER_CARBON_MAX_RESPONSE_BYTES": "1MB"},
            "METER_CARBON_MAX_RESPONSE_BYTES",
            "whole number",
        ),
    ],
)
def test_bad_configuration_fails_fast(env: dict[str, str], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        provider_from_env(env)
    assert info.value.setting == setting
    assert setting in str(info.value) and words in str(info.value)

"""`FallbackChain`: every failure recorded, warned once, ending at the final provider."""

from __future__ import annotations

import logging

import pytest

from meter.carbon.providers import (
    CachedProvider,
    ConstantProvider,
    ElectricityMapsProvider,
    EmbeddedProvider,
    FallbackChain,
    Intensity,
    ProviderError,
    WattTimeProvider,
)
from meter.testing.carbon_servers import FakeElectricityMaps
from tests.meter.carbon.providers.helpers import TABLE, TOKEN, WT_PASSWORD, WT_USER, Counting


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

"""`EmbeddedProvider` with a stand-in table."""

from __future__ import annotations

import pytest

from meter.carbon.providers import EmbeddedProvider, ProviderError
from tests.meter.carbon.providers.helpers import TABLE


def test_embedded_provider_with_a_table() -> None:
    embedded = EmbeddedProvider(table=TABLE)
    result = embedded.intensity("DE", at=1_700_000_000.0)
    assert (result.g_per_kwh, result.zone, result.at) == (380.0, "DE", 1_700_000_000.0)
    assert result.source == "embedded:electricitymaps-2025"
    assert embedded.live is False
    with pytest.raises(ProviderError, match="not in the embedded table") as info:
        embedded.intensity("XX")
    assert info.value.kind == "zone"

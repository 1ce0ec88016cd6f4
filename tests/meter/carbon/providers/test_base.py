"""Argument validation shared by every provider."""

from __future__ import annotations

import math

import pytest

from meter.carbon.providers import ConstantProvider, ElectricityMapsProvider
from meter.errors import ConfigError
from tests.meter.carbon.providers.helpers import TOKEN


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

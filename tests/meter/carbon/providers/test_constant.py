"""`ConstantProvider`."""

from __future__ import annotations

import math

import pytest

from meter.carbon.providers import ConstantProvider, Intensity
from meter.errors import ConfigError


def test_constant_provider() -> None:
    result = ConstantProvider(250.0).intensity("DE", at=1_700_000_000.0)
    assert result == Intensity(250.0, "custom", "constant", 1_700_000_000.0)
    assert ConstantProvider(0, zone="onsite").intensity("FR").zone == "onsite"
    for bad in (-5, math.nan, math.inf, "250", True, None):
        with pytest.raises(ConfigError, match="g_per_kwh"):
            ConstantProvider(bad)  # type: ignore[arg-type]

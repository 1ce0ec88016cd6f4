"""Carbon accounting: grid intensity (embedded yearly table, live providers), zone resolution,
and CO2e from measured joules: location-based, market-based and embodied.

>>> from meter.carbon import compare_zones, project   # doctest: +SKIP
>>> [round(p.co2e_g) for p in compare_zones(3.6e6, ["FR", "PL"])]   # 1 kWh   # doctest: +SKIP
[31, 565]

The providers and zone modules load lazily (``import meter`` stays light and offline).
"""

from __future__ import annotations

from typing import Any

from meter.carbon.accounting import (
    DEFAULT_PUE,
    TYPICAL_PUE,
    MarketBasis,
    Projection,
    ZonePrice,
    compare_zones,
    project,
)
from meter.carbon.embodied import Embodied

_LAZY = {
    "Intensity": "meter.carbon.providers",
    "Provider": "meter.carbon.providers",
    "ProviderError": "meter.carbon.providers",
    "ConstantProvider": "meter.carbon.providers",
    "EmbeddedProvider": "meter.carbon.providers",
    "ElectricityMapsProvider": "meter.carbon.providers",
    "WattTimeProvider": "meter.carbon.providers",
    "UKCarbonIntensityProvider": "meter.carbon.providers",
    "CachedProvider": "meter.carbon.providers",
    "FallbackChain": "meter.carbon.providers",
    "provider_from_env": "meter.carbon.providers",
    "resolve_zone": "meter.carbon.zones",
    "normalise_zone": "meter.carbon.zones",
    "ResolvedZone": "meter.carbon.zones",
    "CLOUD_REGIONS": "meter.carbon.zones",
    "load_table": "meter.carbon.table",
    "ZoneRecord": "meter.carbon.table",
}

__all__ = [
    "DEFAULT_PUE",
    "TYPICAL_PUE",
    "Embodied",
    "MarketBasis",
    "Projection",
    "ZonePrice",
    "compare_zones",
    "project",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meter.carbon' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

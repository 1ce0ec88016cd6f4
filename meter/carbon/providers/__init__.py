"""Grid carbon-intensity providers behind one interface: ``intensity(zone, at) -> Intensity``.

Offline: `ConstantProvider` (a figure you give) and `EmbeddedProvider` (the yearly table that
ships with meter; the default). Live: `ElectricityMapsProvider`, `WattTimeProvider` (marginal
MOER) and `UKCarbonIntensityProvider` (Great Britain, no key). A live provider is meant to be
wrapped in a `CachedProvider` (one request per zone and time bucket per TTL) inside a
`FallbackChain` that ends at the embedded table; every fallback is recorded in the returned
`Intensity` with its reason, never silent.

>>> from meter.carbon.providers import ConstantProvider
>>> ConstantProvider(250.0).intensity("DE", at=1_700_000_000.0).g_per_kwh
250.0

``provider_from_env()`` builds what the environment asks for (``METER_CARBON_PROVIDER``, see
there). Its default, the embedded table, opens no socket and does not import ``requests``.

Every live lookup is bounded in attempts, time (``deadline_s``, 10 s, retries included) and
size (``max_response_bytes``, 1 MB): see `meter.carbon.providers.http`. Secrets (API tokens,
passwords, WattTime's bearer tokens) live in private attributes, are masked in every ``repr``
and are scrubbed from every error reason; nothing here logs them.

The modules: `base` (the result, the error, the protocol), `http` (bounded requests; the
requests/urllib3 plumbing is `_transport`, imported on the first request), `constant`,
`embedded`, `electricitymaps`, `watttime`, `uk`, `cache`, `chain` and `config`.
"""

from __future__ import annotations

from meter.carbon.providers.base import Intensity, Provider, ProviderError
from meter.carbon.providers.base import _Secret as _Secret
from meter.carbon.providers.cache import DEFAULT_TTL_S, CachedProvider
from meter.carbon.providers.chain import FallbackChain
from meter.carbon.providers.config import provider_from_env
from meter.carbon.providers.constant import ConstantProvider
from meter.carbon.providers.electricitymaps import ELECTRICITYMAPS_URL, ElectricityMapsProvider
from meter.carbon.providers.embedded import EmbeddedProvider
from meter.carbon.providers.http import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    MAX_RETRY_AFTER_S,
)
from meter.carbon.providers.uk import (
    UK_CARBON_INTENSITY_URL,
    UK_REGIONS,
    UKCarbonIntensityProvider,
)
from meter.carbon.providers.watttime import (
    LBS_PER_MWH_TO_G_PER_KWH,
    WATTTIME_REGIONS,
    WATTTIME_URL,
    WattTimeProvider,
)

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TTL_S",
    "ELECTRICITYMAPS_URL",
    "LBS_PER_MWH_TO_G_PER_KWH",
    "MAX_RETRY_AFTER_S",
    "UK_CARBON_INTENSITY_URL",
    "UK_REGIONS",
    "WATTTIME_REGIONS",
    "WATTTIME_URL",
    "CachedProvider",
    "ConstantProvider",
    "ElectricityMapsProvider",
    "EmbeddedProvider",
    "FallbackChain",
    "Intensity",
    "Provider",
    "ProviderError",
    "UKCarbonIntensityProvider",
    "WattTimeProvider",
    "provider_from_env",
]

"""`ConstantProvider`: one intensity you give, everywhere and always (offline)."""

from __future__ import annotations

import math
import time

from meter.carbon.providers.base import Intensity, _check_at, _check_zone
from meter.errors import ConfigError

__all__ = ["ConstantProvider"]


class ConstantProvider:
    """The same intensity everywhere and always: ``g_per_kwh`` gCO2e/kWh, reported for
    ``zone`` (``custom`` unless you name it).

    >>> ConstantProvider(0.0, zone="onsite-solar").intensity("FR").zone
    'onsite-solar'
    """

    name = "constant"
    live = False

    def __init__(self, g_per_kwh: float, zone: str = "custom") -> None:
        if isinstance(g_per_kwh, bool) or not isinstance(g_per_kwh, (int, float)):
            raise ConfigError(
                f"g_per_kwh={g_per_kwh!r}: give a carbon intensity in gCO2e/kWh, e.g. 250.0",
                setting="g_per_kwh",
            )
        if not math.isfinite(g_per_kwh) or g_per_kwh < 0:
            raise ConfigError(
                f"g_per_kwh={g_per_kwh!r}: a carbon intensity is a finite number of gCO2e/kWh "
                ">= 0 (e.g. 250.0; 0 for a fully carbon-free supply)",
                setting="g_per_kwh",
            )
        self.g_per_kwh = float(g_per_kwh)
        self.zone = _check_zone(zone)

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        _check_zone(zone)
        when = _check_at(at)
        return Intensity(
            self.g_per_kwh, self.zone, "constant", time.time() if when is None else when
        )

    def __repr__(self) -> str:
        return f"ConstantProvider(g_per_kwh={self.g_per_kwh!r}, zone={self.zone!r})"

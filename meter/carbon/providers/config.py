"""`provider_from_env`: the provider the environment asks for (``METER_CARBON_*``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from meter import config
from meter.carbon.providers.base import Provider, _check_count, _check_positive, _check_url, _env
from meter.carbon.providers.cache import DEFAULT_TTL_S, CachedProvider
from meter.carbon.providers.chain import FallbackChain
from meter.carbon.providers.constant import ConstantProvider
from meter.carbon.providers.electricitymaps import ElectricityMapsProvider
from meter.carbon.providers.embedded import EmbeddedProvider
from meter.carbon.providers.uk import UK_REGIONS, UKCarbonIntensityProvider
from meter.carbon.providers.watttime import WattTimeProvider
from meter.errors import ConfigError

__all__ = ["provider_from_env"]

log = logging.getLogger("meter")

_LIVE_NAMES = ("electricitymaps", "watttime", "uk")


def provider_from_env(environ: Mapping[str, str] | None = None) -> Provider:
    """The provider the environment asks for.

    * ``METER_CARBON_PROVIDER``: ``embedded`` (default: the yearly table, offline),
      ``constant:<g/kWh>``, or a live API: ``electricitymaps`` (``ELECTRICITYMAPS_TOKEN``),
      ``watttime`` (``WATTTIME_USERNAME``/``WATTTIME_PASSWORD``, optional
      ``METER_WATTTIME_REGION``), ``uk`` (no key; optional ``METER_UK_REGION_ID``).
    * ``METER_CARBON_URL``: the live API's base URL (a mirror, or a local fake in tests).
    * ``METER_CARBON_TTL_S``: how long a live answer is reused (default 300 s).
    * ``METER_CARBON_DEADLINE_S``: the most one live lookup may take, every retry included,
      before it falls back (default 10 s).
    * ``METER_CARBON_MAX_RESPONSE_BYTES``: the largest live answer read (default 1000000).

    A live provider comes back as ``FallbackChain([CachedProvider(live)], EmbeddedProvider())``.
    Bad values raise `ConfigError` naming the variable. Building a provider opens no socket;
    the default does not even import ``requests``.

    >>> provider_from_env({"METER_CARBON_PROVIDER": "constant:120"}).intensity("DE").g_per_kwh
    120.0
    """
    env = _env(environ)
    spec = (config.raw("METER_CARBON_PROVIDER", env) or "") or "embedded"
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    url = config.raw("METER_CARBON_URL", env) or ""

    if name == "embedded" and not arg:
        if url:
            log.warning("meter: METER_CARBON_URL is ignored: METER_CARBON_PROVIDER is embedded")
        return EmbeddedProvider()
    if name == "constant":
        if url:
            log.warning("meter: METER_CARBON_URL is ignored: METER_CARBON_PROVIDER is constant")
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"METER_CARBON_PROVIDER={spec!r}: constant needs a carbon intensity in "
                "gCO2e/kWh >= 0, e.g. constant:250",
                setting="METER_CARBON_PROVIDER",
            )
        return ConstantProvider(value)
    if name == "uk-carbon-intensity":
        name = "uk"
    if name not in _LIVE_NAMES or arg:
        raise ConfigError(
            f"METER_CARBON_PROVIDER={spec!r} is not a carbon intensity provider; use one of "
            "embedded (the default), constant:<g/kWh>, electricitymaps, watttime, uk",
            setting="METER_CARBON_PROVIDER",
        )

    ttl_raw = config.raw("METER_CARBON_TTL_S", env) or ""
    ttl = _check_positive(ttl_raw, "METER_CARBON_TTL_S") if ttl_raw else DEFAULT_TTL_S
    options = _live_options(env)
    if url:
        options["base_url"] = _check_url(url, "METER_CARBON_URL")
    live: Provider
    if name == "electricitymaps":
        live = ElectricityMapsProvider(environ=env, **options)
    elif name == "watttime":
        region = (config.raw("METER_WATTTIME_REGION", env) or "") or None
        live = WattTimeProvider(environ=env, region=region, **options)
    else:
        region_raw = config.raw("METER_UK_REGION_ID", env) or ""
        region_id = None
        if region_raw:
            if not region_raw.isdigit() or int(region_raw) not in UK_REGIONS:
                raise ConfigError(
                    f"METER_UK_REGION_ID={region_raw!r}: UK Carbon Intensity regions are 1..17",
                    setting="METER_UK_REGION_ID",
                )
            region_id = int(region_raw)
        live = UKCarbonIntensityProvider(region_id=region_id, **options)
    return FallbackChain([CachedProvider(live, ttl_s=ttl)], EmbeddedProvider())


def _live_options(env: Mapping[str, str]) -> dict[str, Any]:
    """The bounds on a live lookup the environment sets (the providers' defaults otherwise)."""
    options: dict[str, Any] = {}
    deadline = config.raw("METER_CARBON_DEADLINE_S", env) or ""
    if deadline:
        options["deadline_s"] = _check_positive(deadline, "METER_CARBON_DEADLINE_S")
    max_bytes = config.raw("METER_CARBON_MAX_RESPONSE_BYTES", env) or ""
    if max_bytes:
        options["max_response_bytes"] = _check_count(max_bytes, "METER_CARBON_MAX_RESPONSE_BYTES")
    return options

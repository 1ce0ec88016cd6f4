"""What every provider shares: the `Intensity` result, `ProviderError`, the `Provider` protocol,
secret masking, argument validation and the parsing of the values the APIs send."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from meter.errors import ConfigError, MeterError

__all__ = ["Intensity", "Provider", "ProviderError"]


@dataclass(frozen=True)
class Intensity:
    """A grid carbon intensity: ``g_per_kwh`` gCO2e/kWh in ``zone`` at wall time ``at``.

    ``source`` names what answered (``electricitymaps``, ``watttime``, ``uk-carbon-intensity``,
    ``embedded:electricitymaps-2025``, ``constant``). ``marginal``: a marginal rate (WattTime's
    MOER), not a grid average. ``estimated``: the source flagged the figure as estimated or
    forecast. ``fallbacks``: ``"provider: reason"`` for each provider that failed before this
    one answered, in order.
    """

    g_per_kwh: float
    zone: str
    source: str
    at: float
    marginal: bool = False
    estimated: bool = False
    fallbacks: tuple[str, ...] = ()


class ProviderError(MeterError):
    """A provider could not give an intensity. ``reason`` says why, without the provider's
    name and never with a secret in it; ``kind`` is one of ``auth``, ``rate-limited``,
    ``server``, ``timeout`` (a socket timeout, or the lookup's overall deadline),
    ``connection``, ``malformed``, ``too-large`` (the answer is over the size cap), ``http``,
    ``no-data``, ``zone``. ``retry_after_s``: how long the server asked us to wait, when it
    did."""

    def __init__(
        self,
        reason: str,
        *,
        provider: str | None = None,
        kind: str = "error",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {reason}" if provider else reason)
        self.reason = reason
        self.provider = provider
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s


@runtime_checkable
class Provider(Protocol):
    """Anything that gives a carbon intensity for a zone at a wall time (``None``: now).

    ``name`` is used in fallback reasons. Providers may raise `ProviderError`.
    """

    name: str

    def intensity(self, zone: str, at: float | None = None) -> Intensity: ...


class _Secret:
    """A string that never shows itself in a repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


# -- validation --------------------------------------------------------------------------------


def _check_zone(zone: Any) -> str:
    if not isinstance(zone, str) or not zone.strip():
        raise ConfigError(
            f"zone={zone!r}: give a grid zone key such as 'DE', 'US-CAL-CISO' or 'GB'",
            setting="zone",
        )
    return zone.strip()


def _check_at(at: Any) -> float | None:
    if at is None:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise ConfigError(
            f"at={at!r}: give a wall time in seconds since the epoch (time.time()), or None "
            "for now",
            setting="at",
        )
    return float(at)


def _check_positive(value: Any, setting: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}={value!r} is not a number", setting=setting) from None
    bound = ">= 0" if allow_zero else "> 0"
    if (
        isinstance(value, bool)
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        raise ConfigError(f"{setting}={value!r} must be a finite number {bound}", setting=setting)
    return number


def _check_retries(retries: Any) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ConfigError(f"retries={retries!r} must be an integer 0..10", setting="retries")
    return retries


def _check_count(value: Any, setting: str) -> int:
    """A whole number > 0: an int, or a string of digits (from the environment)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"{setting}={value!r} must be a whole number > 0, e.g. 1000000", setting=setting
        )
    return value


def _check_url(url: Any, setting: str = "base_url") -> str:
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url.strip()):
        raise ConfigError(
            f"{setting}={url!r} is not an http(s) URL; e.g. https://api.electricitymap.org",
            setting=setting,
        )
    return url.strip().rstrip("/")


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


# -- values the APIs send ----------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d+)")


def _parse_time(value: Any) -> float:
    """ISO 8601 (``2019-05-21T00:00:00.000Z``, ``2018-01-20T12:00Z``, ``...+00:00``) -> epoch s.

    Python 3.10's ``fromisoformat`` takes neither ``Z`` nor fractions of other than 3 or 6
    digits, so both are normalised first. A time without an offset is UTC.
    """
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], text, count=1)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _number(value: Any) -> float | None:
    """A JSON number as a finite float >= 0, or None (null, missing, negative, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _iso_utc(t: float, fmt: str | None = None) -> str:
    moment = datetime.fromtimestamp(t, timezone.utc)
    return moment.strftime(fmt) if fmt else moment.isoformat(timespec="seconds")

"""`FallbackChain`: providers in order, ending at one that always answers; every fallback is
recorded in the answer with its reason, never silent."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence

from meter.carbon.providers.base import (
    Intensity,
    Provider,
    ProviderError,
    _check_at,
    _check_zone,
)
from meter.errors import ConfigError

__all__ = ["FallbackChain"]

log = logging.getLogger("meter")


class FallbackChain:
    """Tries ``providers`` in order, then ``final`` (typically `EmbeddedProvider`).

    The answer carries ``"name: reason"`` in ``Intensity.fallbacks`` for every provider that
    failed before it, and its ``source`` says which one answered. A failure is logged as a
    warning once per (provider, reason), at debug level afterwards. Any exception from a
    provider before ``final`` falls back (metering must not break the job); if ``final``
    fails too, a `ProviderError` lists every reason.

    >>> from meter.carbon.providers import ConstantProvider
    >>> chain = FallbackChain([], ConstantProvider(42.0))
    >>> chain.intensity("DE").source
    'constant'
    """

    _MAX_WARNED = 512

    def __init__(self, providers: Sequence[Provider], final: Provider) -> None:
        providers = list(providers)
        for provider in [*providers, final]:
            if not callable(getattr(provider, "intensity", None)):
                raise ConfigError(
                    f"{provider!r} is not a carbon intensity provider", setting="provider"
                )
        self.providers: tuple[Provider, ...] = tuple(providers)
        self.final = final
        everyone = [*self.providers, final]
        self.name: str = getattr(everyone[0], "name", "provider")
        self.live: bool = any(bool(getattr(p, "live", False)) for p in everyone)
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        failures: list[str] = []
        everyone = [*self.providers, self.final]
        for index, provider in enumerate(self.providers):
            name = getattr(provider, "name", type(provider).__name__)
            try:
                result = provider.intensity(key, when)
            except Exception as exc:
                reason = _reason(exc)
                failures.append(f"{name}: {reason}")
                following = getattr(everyone[index + 1], "name", "the next provider")
                self._warn_once(name, reason, following)
                continue
            return self._with(result, failures)
        try:
            result = self.final.intensity(key, when)
        except ProviderError as exc:
            failures.append(f"{getattr(self.final, 'name', 'final')}: {exc.reason}")
            raise ProviderError(
                f"no carbon intensity for zone {key!r}: " + "; ".join(failures),
                provider=self.name,
                kind=exc.kind,
            ) from None
        return self._with(result, failures)

    @staticmethod
    def _with(result: Intensity, failures: list[str]) -> Intensity:
        if not failures:
            return result
        return dataclasses.replace(result, fallbacks=(*failures, *result.fallbacks))

    def _warn_once(self, name: str, reason: str, following: str) -> None:
        with self._lock:
            first = (name, reason) not in self._warned
            if first and len(self._warned) < self._MAX_WARNED:
                self._warned.add((name, reason))
        if first:
            log.warning(
                "meter: carbon intensity from %s failed (%s); falling back to %s",
                name,
                reason,
                following,
            )
        else:
            log.debug("meter: carbon intensity from %s failed again (%s)", name, reason)

    def close(self) -> None:
        for provider in (*self.providers, self.final):
            close = getattr(provider, "close", None)
            if callable(close):
                close()

    def __repr__(self) -> str:
        return f"FallbackChain({list(self.providers)!r}, final={self.final!r})"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return f"unexpected {type(exc).__name__}: {exc}"[:300]

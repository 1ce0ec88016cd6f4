"""`CachedProvider`: one request per zone and time bucket per TTL, failures cached too."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from meter.carbon.providers.base import (
    Intensity,
    Provider,
    ProviderError,
    _check_at,
    _check_positive,
    _check_zone,
)
from meter.errors import ConfigError

__all__ = ["DEFAULT_TTL_S", "CachedProvider"]

DEFAULT_TTL_S = 300.0


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Intensity | None = None
        self.error: BaseException | None = None


class CachedProvider:
    """Caches another provider per (zone, time bucket) for ``ttl_s`` seconds.

    Lookups for times in the same ``bucket_s``-long bucket (default: ``ttl_s``; ``at=None`` is
    now, by ``wall_clock``) share one answer until it is ``ttl_s`` old by ``clock``, so a run
    that prices every sample interval makes one request per zone per bucket. A `ProviderError`
    is cached too, for ``error_ttl_s`` (or the server's ``Retry-After`` when longer), so a
    failing API is not asked on every sample. Thread-safe; concurrent misses for one key make
    one request, the others wait for it.

    >>> from meter.carbon.providers import ConstantProvider
    >>> cached = CachedProvider(ConstantProvider(100.0), ttl_s=600)
    >>> cached.intensity("DE", at=0.0) is cached.intensity("DE", at=1.0)
    True
    """

    def __init__(
        self,
        provider: Provider,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        bucket_s: float | None = None,
        error_ttl_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        max_entries: int = 1024,
    ) -> None:
        if not callable(getattr(provider, "intensity", None)):
            raise ConfigError(
                f"{provider!r} is not a carbon intensity provider", setting="provider"
            )
        self.provider = provider
        self.name: str = getattr(provider, "name", type(provider).__name__)
        self.live: bool = bool(getattr(provider, "live", False))
        self.ttl_s = _check_positive(ttl_s, "ttl_s")
        self.bucket_s = self.ttl_s if bucket_s is None else _check_positive(bucket_s, "bucket_s")
        self.error_ttl_s = _check_positive(error_ttl_s, "error_ttl_s", allow_zero=True)
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_entries = max(1, int(max_entries))
        self._lock = threading.Lock()
        # key -> (expires at, by clock; Intensity or the ProviderError to raise again)
        self._entries: OrderedDict[tuple[str, int], tuple[float, Intensity | ProviderError]] = (
            OrderedDict()
        )
        self._pending: dict[tuple[str, int], _Pending] = {}

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key_zone = _check_zone(zone)
        when = _check_at(at)
        bucket = math.floor((self._wall_clock() if when is None else when) / self.bucket_s)
        key = (key_zone, bucket)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() < entry[0]:
                self._entries.move_to_end(key)
                return self._unwrap(entry[1])
            pending = self._pending.get(key)
            leader = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
        if not leader:
            pending.done.wait()
            if isinstance(pending.error, ProviderError):
                raise _fresh(pending.error)
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            return pending.result
        try:
            result = self.provider.intensity(key_zone, when)
        except ProviderError as exc:
            pending.error = exc
            hold = max(self.error_ttl_s, exc.retry_after_s or 0.0)
            if hold > 0:
                self._store(key, self._clock() + hold, exc)
            raise
        except BaseException as exc:  # a bug, not a provider failure: not cached
            pending.error = exc
            raise
        else:
            pending.result = result
            self._store(key, self._clock() + self.ttl_s, result)
            return result
        finally:
            with self._lock:
                del self._pending[key]
            pending.done.set()

    def _store(
        self, key: tuple[str, int], expires: float, value: Intensity | ProviderError
    ) -> None:
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                now = self._clock()
                for stale in [k for k, (exp, _) in self._entries.items() if exp <= now]:
                    del self._entries[stale]
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)

    @staticmethod
    def _unwrap(value: Intensity | ProviderError) -> Intensity:
        if isinstance(value, ProviderError):
            raise _fresh(value)  # a new one: re-raising one object would grow its traceback
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        close = getattr(self.provider, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"CachedProvider({self.provider!r}, ttl_s={self.ttl_s:g})"


def _fresh(exc: ProviderError) -> ProviderError:
    return ProviderError(
        exc.reason,
        provider=exc.provider,
        kind=exc.kind,
        status=exc.status,
        retry_after_s=exc.retry_after_s,
    )

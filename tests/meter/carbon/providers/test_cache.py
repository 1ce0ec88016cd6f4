"""`CachedProvider`: one request per zone and bucket per TTL, failures held, one request
for concurrent misses."""

from __future__ import annotations

import math
import threading

import pytest

from meter.carbon.providers import (
    CachedProvider,
    ConstantProvider,
    ElectricityMapsProvider,
    Intensity,
    ProviderError,
)
from meter.errors import ConfigError
from meter.testing.carbon_servers import FakeElectricityMaps
from tests.meter.carbon.providers.helpers import TOKEN, Clock, Counting


def test_cache_50_lookups_inside_the_ttl_make_one_request() -> None:
    clock = Clock()
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        cached = CachedProvider(em, ttl_s=300.0, clock=clock, wall_clock=lambda: 1_800_000_000.0)
        results = {cached.intensity("DE") for _ in range(50)}
        assert len(fake.requests) == 1 and len(results) == 1
        clock.now += 299.0
        cached.intensity("DE")
        assert len(fake.requests) == 1
        clock.now += 2.0
        cached.intensity("DE")
        assert len(fake.requests) == 2
        cached.intensity("FR")  # zones are cached apart
        assert len(fake.requests) == 3
    assert cached.name == "electricitymaps" and cached.live is True


def test_cache_buckets_by_the_time_asked_for() -> None:
    inner = Counting()
    cached = CachedProvider(inner, ttl_s=300.0, clock=Clock(), wall_clock=lambda: 3000.0)
    for at in (2700.0, 2800.0, 2999.9, None):
        cached.intensity("DE", at=at)
    # 2700..2999.9 share a 300 s bucket; None is now, 3000, the start of the next one.
    assert inner.calls == 2
    cached.intensity("DE", at=3100.0)
    assert inner.calls == 2


def test_cache_keeps_a_failure_for_a_while() -> None:
    clock = Clock()
    inner = Counting(ProviderError("down", provider="counting", kind="server"))
    cached = CachedProvider(inner, ttl_s=300.0, clock=clock, error_ttl_s=60.0)
    for _ in range(10):
        with pytest.raises(ProviderError, match="down"):
            cached.intensity("DE", at=0.0)
    assert inner.calls == 1
    clock.now += 61.0
    with pytest.raises(ProviderError):
        cached.intensity("DE", at=0.0)
    assert inner.calls == 2


def test_cache_holds_a_rate_limit_for_its_retry_after() -> None:
    clock = Clock()
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        cached = CachedProvider(em, ttl_s=300.0, clock=clock, error_ttl_s=10.0)
        fake.fail_next(429, retry_after=120)
        for _ in range(3):
            with pytest.raises(ProviderError, match="Retry-After"):
                cached.intensity("DE")
        clock.now += 100.0
        with pytest.raises(ProviderError):
            cached.intensity("DE")
        assert len(fake.requests) == 1
        clock.now += 21.0
        assert cached.intensity("DE").g_per_kwh == 420.0
        assert len(fake.requests) == 2


def test_cache_concurrent_misses_make_one_request() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.hang_next(0.3)  # a slow answer, so that every thread misses at once
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        cached = CachedProvider(em, wall_clock=lambda: 1_800_000_000.0)
        results: list[Intensity] = []
        barrier = threading.Barrier(8)

        def lookup() -> None:
            barrier.wait()
            results.append(cached.intensity("DE"))

        threads = [threading.Thread(target=lookup) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(fake.requests) == 1
    assert len(results) == 8 and len(set(results)) == 1


def test_cache_validates_its_settings() -> None:
    for ttl in (0, -1, math.nan):
        with pytest.raises(ConfigError, match="ttl_s"):
            CachedProvider(ConstantProvider(1.0), ttl_s=ttl)
    with pytest.raises(ConfigError, match="not a carbon intensity provider"):
        CachedProvider(object())  # type: ignore[arg-type]

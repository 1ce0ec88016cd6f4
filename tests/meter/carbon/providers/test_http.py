"""The HTTP behaviour every live API shares, against local fakes on 127.0.0.1: 401, 429 with
Retry-After, 5xx, timeouts, malformed JSON, HTML pages, refused connections, redirects; and the
bounds on a lookup (the response size cap and the overall deadline)."""

from __future__ import annotations

import logging
import socket
import tracemalloc

import pytest

from meter.carbon.providers import (
    CachedProvider,
    ElectricityMapsProvider,
    EmbeddedProvider,
    FallbackChain,
    Intensity,
    Provider,
    ProviderError,
    WattTimeProvider,
)
from meter.errors import ConfigError
from meter.testing.carbon_servers import FakeElectricityMaps
from tests.meter.carbon.providers.helpers import KINDS, TABLE, TOKEN, WT_USER, elapsed, live


@pytest.mark.parametrize("kind", KINDS)
def test_happy_path_shape(kind: str) -> None:
    with live(kind) as api:
        result = api.lookup()
    assert result.g_per_kwh == pytest.approx(api.g_per_kwh)
    assert result.zone == api.zone
    assert result.fallbacks == ()
    assert result.marginal is (kind == "watttime")


@pytest.mark.parametrize("kind", KINDS)
def test_401_fails_at_once_saying_what_to_check(kind: str) -> None:
    with live(kind) as api:
        if kind == "electricitymaps":
            api.provider = ElectricityMapsProvider("wrong-token", base_url=api.fake.url)
            hint = "ELECTRICITYMAPS_TOKEN"
        elif kind == "watttime":
            api.provider = WattTimeProvider(WT_USER, "wrong-password", base_url=api.fake.url)
            hint = "WATTTIME_PASSWORD"
        else:
            api.fake.fail_next(403)
            hint = "needs no key"
        error, seconds = elapsed(api.lookup)
        assert len(api.fake.requests) == 1  # no retry
    assert isinstance(error, ProviderError)
    assert error.kind == "auth" and error.status in (401, 403)
    assert hint in str(error)
    assert seconds < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_is_honoured(kind: str) -> None:
    with live(kind) as api:
        api.fake.fail_next(429, retry_after=1)
        result, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 2
    assert isinstance(result, Intensity), result
    assert 0.95 <= seconds < 3.0


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_over_the_cap_fails_now(kind: str) -> None:
    with live(kind) as api:
        api.fake.fail_next(429, retry_after=120)
        error, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 1
    assert isinstance(error, ProviderError)
    assert (error.kind, error.status, error.retry_after_s) == ("rate-limited", 429, 120.0)
    assert "Retry-After 120 s" in error.reason
    assert seconds < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_500_then_success_is_retried(kind: str) -> None:
    with live(kind) as api:
        api.fake.fail_next(500)
        result = api.lookup()
        assert len(api.data_requests()) == 2
    assert result.g_per_kwh == pytest.approx(api.g_per_kwh)


@pytest.mark.parametrize("kind", KINDS)
def test_500s_stop_after_the_retries(kind: str) -> None:
    with live(kind, retries=2) as api:
        api.fake.fail_next(503, times=10)
        error, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 3
    assert isinstance(error, ProviderError)
    assert error.kind == "server" and "HTTP 503" in error.reason and "3 attempts" in error.reason
    assert seconds < 2.0  # backoff 0.25 s + 0.5 s


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_fails_within_the_budget(kind: str) -> None:
    with live(kind, timeout_s=0.3, retries=1) as api:
        if kind == "watttime":
            api.provider._login()  # the login is not what this test times
        api.fake.hang_next(5.0, times=5)
        error, seconds = elapsed(api.lookup)
        assert len(api.data_requests()) == 2
    assert isinstance(error, ProviderError)
    assert error.kind == "timeout" and "timed out after 0.3 s" in error.reason
    assert seconds < 0.3 * 2 + 0.25 + 0.6


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_json(kind: str) -> None:
    with live(kind) as api:
        api.fake.malformed_next()
        error, _ = elapsed(api.lookup)
        assert len(api.data_requests()) == 1
    assert isinstance(error, ProviderError)
    assert error.kind == "malformed"
    assert "malformed response" in str(error) and "not valid JSON" in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_html_error_page(kind: str) -> None:
    with live(kind) as api:
        api.fake.html_next(200)  # a captive portal
        error, _ = elapsed(api.lookup)
        assert isinstance(error, ProviderError)
        assert error.kind == "malformed" and "HTML page" in error.reason
        assert "Sign in to the network" in error.reason
        api.fake.html_next(502)  # a proxy's error page: a server error, retried
        assert api.lookup().g_per_kwh == pytest.approx(api.g_per_kwh)


def test_connection_refused_fails_fast() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    em = ElectricityMapsProvider(TOKEN, base_url=f"http://127.0.0.1:{port}", retries=1)
    error, seconds = elapsed(lambda: em.intensity("DE"))
    assert isinstance(error, ProviderError) and error.kind == "connection"
    assert "2 attempts" in error.reason
    assert seconds < 2.0


def test_redirects_are_not_followed() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.fail_next(302)
        with pytest.raises(ProviderError, match="HTTP 302") as info:
            ElectricityMapsProvider(TOKEN, base_url=fake.url).intensity("DE")
        assert len(fake.requests) == 1
    assert info.value.kind == "http"


# -- the bounds on a lookup: time and size -----------------------------------------------------

DEADLINE_S = 1.5
#: How far past the deadline a lookup may end: the watchdog's wake-up and the test's own work.
SLACK_S = 2.0


def over_fallback(provider: Provider) -> Intensity:
    """A lookup as metering makes it: cached, in a chain that ends at the (stand-in) table."""
    chain = FallbackChain([CachedProvider(provider)], EmbeddedProvider(table=TABLE))
    return chain.intensity("DE")


def fallback_reason(result: Intensity) -> str:
    assert result.source == "embedded:electricitymaps-2025", result
    (reason,) = result.fallbacks
    return reason


@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers-and-body"])
def test_a_trickling_answer_is_cut_off_at_the_deadline(headers: bool) -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        # A byte every 50 ms: far inside the 1 s read timeout, so no read ever times out; the
        # whole answer would take about 20 s.
        fake.trickle_next(0.05, headers=headers)
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url, timeout_s=1.0, deadline_s=DEADLINE_S)
        result, seconds = elapsed(lambda: over_fallback(em))
        assert len(fake.requests) == 1
    assert isinstance(result, Intensity), result
    reason = fallback_reason(result)
    assert reason.startswith("electricitymaps: no complete answer within the 1.5 s deadline")
    assert "METER_CARBON_DEADLINE_S" in reason
    assert seconds < DEADLINE_S + SLACK_S


def test_the_deadline_covers_every_retry_and_wait() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.hang_next(5.0, times=20)
        em = ElectricityMapsProvider(
            TOKEN, base_url=fake.url, timeout_s=0.5, retries=10, deadline_s=DEADLINE_S
        )
        error, seconds = elapsed(lambda: em.intensity("DE"))
        attempts = len(fake.requests)
    # Without the deadline: 11 attempts and about 15 s of timeouts and backoff.
    assert isinstance(error, ProviderError) and error.kind == "timeout"
    assert "timed out after 0.5 s" in error.reason and "1.5 s deadline" in error.reason
    assert 2 <= attempts < 11
    assert seconds < DEADLINE_S + SLACK_S


def test_a_retry_after_beyond_the_deadline_fails_now() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.fail_next(429, retry_after=3)  # under the 5 s cap, over what the deadline leaves
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url, deadline_s=DEADLINE_S)
        error, seconds = elapsed(lambda: em.intensity("DE"))
        assert len(fake.requests) == 1
    assert isinstance(error, ProviderError)
    assert (error.kind, error.status, error.retry_after_s) == ("rate-limited", 429, 3.0)
    assert "no time left for another attempt within the 1.5 s deadline" in error.reason
    assert seconds < 1.0


def test_an_answer_declared_over_the_size_cap_is_not_read() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        fake.huge_next(50_000_000)
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        reason = fallback_reason(over_fallback(em))
    assert reason.startswith(
        "electricitymaps: answer over the 1000000 byte size cap (it declares 50000000 bytes)"
    )
    assert "METER_CARBON_MAX_RESPONSE_BYTES" in reason


@pytest.mark.parametrize(
    ("declare_length", "gzip"),
    [(False, False), (True, True)],
    ids=["read-until-close", "gzip-bomb"],
)
def test_reading_stops_at_the_size_cap(declare_length: bool, gzip: bool) -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url)
        em.intensity("DE")  # requests and urllib3 imported, the session made: not measured
        # 32 MB with no length to check first, or gzip that declares a harmless ~32 kB.
        fake.huge_next(32_000_000, declare_length=declare_length, gzip=gzip)
        tracemalloc.start()
        try:
            result = over_fallback(em)
            _, peak_bytes = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    reason = fallback_reason(result)
    assert "over the 1000000 byte size cap (stopped reading at 1000001 bytes)" in reason
    assert peak_bytes < 8_000_000  # about the cap, not the 32 MB answer


def test_the_bounds_are_settings() -> None:
    with FakeElectricityMaps(token=TOKEN) as fake:
        small = ElectricityMapsProvider(TOKEN, base_url=fake.url, max_response_bytes=100)
        with pytest.raises(ProviderError, match="over the 100 byte size cap") as info:
            small.intensity("DE")
    assert info.value.kind == "too-large" and info.value.status == 200
    for setting, bad in (("deadline_s", 0), ("deadline_s", -1.0), ("max_response_bytes", 0)):
        with pytest.raises(ConfigError, match=setting):
            ElectricityMapsProvider(TOKEN, **{setting: bad})
    with pytest.raises(ConfigError, match="max_response_bytes"):
        ElectricityMapsProvider(TOKEN, max_response_bytes=1.5)  # type: ignore[arg-type]


def test_retries_leave_the_warning_to_the_fallback_chain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with live("electricitymaps", timeout_s=0.3, retries=1) as api:
        api.fake.hang_next(5.0)  # the first attempt times out, the retry answers
        assert api.lookup().g_per_kwh == pytest.approx(api.g_per_kwh)
        assert len(api.data_requests()) == 2
    # urllib3 warns on each retry after a broken connection; inside a lookup it is debug.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")] == []

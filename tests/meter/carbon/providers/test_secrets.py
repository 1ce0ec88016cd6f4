"""Secrets hygiene: tokens and passwords never in an error, a repr, a log line or a result."""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from meter.carbon.providers import (
    CachedProvider,
    ElectricityMapsProvider,
    FallbackChain,
    WattTimeProvider,
)
from meter.testing.carbon_servers import FakeElectricityMaps, FakeWattTime
from tests.meter.carbon.providers.helpers import TOKEN, WRONG_SECRET, WT_PASSWORD, WT_USER


def test_secrets_never_appear_in_errors_reprs_logs_or_results(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    texts: list[str] = []
    secrets = [TOKEN, WT_PASSWORD, WRONG_SECRET]
    secrets.append(base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode())

    def record(fn: Callable[[], Any]) -> None:
        try:
            texts.append(repr(fn()))
        except Exception as exc:
            texts.extend([str(exc), repr(exc), repr(exc.args), getattr(exc, "reason", "")])
            texts.extend(traceback.format_exception(type(exc), exc, exc.__traceback__))
            cause = exc.__cause__ or exc.__context__
            texts.append(repr(cause))

    fast: dict[str, Any] = {"timeout_s": 0.3, "retries": 1}
    with FakeElectricityMaps(token=TOKEN) as fake:
        em = ElectricityMapsProvider(TOKEN, base_url=fake.url, **fast)
        bad = ElectricityMapsProvider(WRONG_SECRET, base_url=fake.url, **fast)
        chain = FallbackChain([CachedProvider(bad)], CachedProvider(em))
        texts += [repr(em), repr(bad), repr(chain), str(vars(em))]
        record(lambda: em.intensity("DE"))
        record(lambda: bad.intensity("DE"))
        record(lambda: chain.intensity("DE"))
        fake.fail_next(404, body={"error": f"no such token {TOKEN}"})  # an echoing server
        record(lambda: em.intensity("DE"))
        for inject in (
            lambda: fake.fail_next(429, retry_after=60),
            lambda: fake.fail_next(500, times=2),
            lambda: fake.hang_next(2.0, times=2),
            fake.malformed_next,
            fake.html_next,
        ):
            inject()
            record(lambda: em.intensity("DE"))
    with FakeWattTime(WT_USER, WT_PASSWORD) as wt_fake:
        wt = WattTimeProvider(WT_USER, WT_PASSWORD, base_url=wt_fake.url, **fast)
        texts += [repr(wt), str(vars(wt))]
        record(lambda: wt.intensity("US-CAL-CISO"))
        wt_fake.expire_tokens()
        record(lambda: wt.intensity("US-CAL-CISO"))
        wt_fake.fail_next(401, times=2)
        record(lambda: wt.intensity("US-CAL-CISO"))
        wt_fake.fail_next(500, times=2)
        record(lambda: wt.intensity("US-CAL-CISO"))
        record(
            lambda: WattTimeProvider(WT_USER, WRONG_SECRET, base_url=wt_fake.url).intensity(
                "US-CAL-CISO"
            )
        )
        secrets += wt_fake.issued_tokens
        assert len(wt_fake.issued_tokens) == 3
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    haystack = "\n".join(texts)
    assert "HTTP 404 (no such token ***)" in haystack  # scrubbed, not dropped
    for secret in secrets:
        assert secret not in haystack

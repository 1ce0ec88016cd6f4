"""Fixtures: real ``prometheus`` and ``prometheus-pushgateway`` on 127.0.0.1 (see promservers.py).

Tests that use them skip, with the reason, when the binaries are not installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.exporters.promservers import Prometheus, run_prometheus, run_pushgateway


@pytest.fixture
def prometheus_server() -> Iterator[Callable[..., Prometheus]]:
    """``prometheus_server(["127.0.0.1:PORT"], scrape_interval="200ms")`` -> `Prometheus`."""
    stack = contextlib.ExitStack()

    def start(
        targets: Sequence[str] | dict[str, Any], scrape_interval: str = "200ms"
    ) -> Prometheus:
        return stack.enter_context(run_prometheus(targets, scrape_interval))

    with stack:
        yield start


@pytest.fixture
def pushgateway() -> Iterator[str]:
    """The URL of a fresh ``prometheus-pushgateway`` on 127.0.0.1."""
    with run_pushgateway() as url:
        yield url

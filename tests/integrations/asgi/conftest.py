"""Fixtures of the middleware tests (the helpers they share are in apps.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meter import Meter
from tests.integrations.asgi.apps import WATTS


@pytest.fixture
def gpus2(meter_factory: Callable[..., Meter]) -> Meter:
    """A started meter on two simulated GPUs (300 W, 150 W), sampled at 100 Hz."""
    m = meter_factory(*WATTS, interval_s=0.01)
    m.wait_ready()
    return m

"""pytest plugin (registered as ``meter`` through the ``pytest11`` entry point).

Fixtures for testing code that uses meter, on simulated GPUs, with no hardware:

* ``simulated_meter``: the process default meter replaced by one on a single simulated
  300 W GPU (no CPU devices), so ``meter.measure()`` in the code under test is metered; the
  previous default is restored afterwards.
* ``meter_factory``: ``meter_factory(300.0, 150.0, interval_s=0.05)`` builds (and later
  closes) a `Meter` on the given simulated GPUs.
* ``fake_rapl``: ``fake_rapl(sockets=2)`` builds a fake powercap tree under ``tmp_path``.
* ``clocked_meter``: ``m, clock = clocked_meter(300.0)`` builds a started `Meter` on a
  `FakeClock`; ``meter.testing.replay.advance(m, clock, 0.5)`` moves time on, running its
  sampler: timing logic tested in milliseconds, without sleeping.

>>> def test_my_training_step(simulated_meter):       # doctest: +SKIP
...     with meter.measure("step") as w:
...         my_step()
...     assert w.result.devices["gpu:0"].method == "simulated"
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meter.core import Meter, set_meter
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML, SimulatedGPU, simulated_gpus
from meter.testing.rapl import FakeRapl


@pytest.fixture
def meter_factory() -> Iterator[Callable[..., Meter]]:
    stack = contextlib.ExitStack()
    meters: list[Meter] = []

    def make(*gpus: SimulatedGPU | float, **options: Any) -> Meter:
        stack.enter_context(simulated_gpus(list(gpus) or [300.0]))
        options.setdefault("cpu", False)
        options.setdefault("idle_file", "/nonexistent/meter-idle.json")
        m = Meter(**options)
        meters.append(m)
        return m

    with stack:
        yield make
        for m in meters:
            m.close()


@pytest.fixture
def clocked_meter() -> Iterator[Callable[..., tuple[Meter, FakeClock]]]:
    """``m, clock = clocked_meter(300.0, 150.0, interval_s=0.05)``: a started `Meter` on
    simulated GPUs whose time is a `FakeClock` and whose sampler runs only when the test moves
    the clock (`meter.testing.replay.advance`): no thread, no sleeping, milliseconds per test.
    A float means ``SimulatedGPU(that)`` on the same clock."""
    meters: list[Meter] = []

    def make(*gpus: SimulatedGPU | float, **options: Any) -> tuple[Meter, FakeClock]:
        clock = options.pop("clock", None) or FakeClock()
        boards = [
            g if isinstance(g, SimulatedGPU) else SimulatedGPU(float(g), clock=clock)
            for g in (gpus or (300.0,))
        ]
        options.setdefault("cpu", False)
        options.setdefault("carbon", False)
        options.setdefault("idle_file", "/nonexistent/meter-idle.json")
        m = Meter(
            nvml=FakeNVML(boards), clock=clock, sleep=clock.sleep, background=False, **options
        )
        meters.append(m)
        m.start()
        return m, clock

    yield make
    for m in meters:
        m.close()


@pytest.fixture
def simulated_meter(meter_factory: Callable[..., Meter]) -> Iterator[Meter]:
    m = meter_factory(300.0)
    previous = set_meter(m)
    try:
        yield m
    finally:
        set_meter(previous)


@pytest.fixture
def fake_rapl(tmp_path: Path) -> Callable[..., FakeRapl]:
    def make(**options: Any) -> FakeRapl:
        return FakeRapl(tmp_path / "powercap", **options)

    return make

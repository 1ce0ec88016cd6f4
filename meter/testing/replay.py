"""Replay a simulated GPU through the real meter on a fake clock: windows in microseconds.

`replay_windows` builds a `Meter` on one `SimulatedGPU` (a recording replay, a sensor model)
with the real device code, ledger, sampler and windows, drives the sampler on a `FakeClock`
(no thread, no real waits) and opens and closes windows at the given replay times. It is how
the tests and ``benchmarks/bench_traces.py`` measure what meter adds to what the driver
published, over thousands of windows, in a second.

    >>> from meter.testing.simgpu import SimulatedGPU
    >>> clock = FakeClock()
    >>> gpu = SimulatedGPU(300.0, clock=clock)
    >>> (w,) = replay_windows(gpu, clock, [(1.0, 2.0)])
    >>> round(w.metered_j, 1), round(w.end_s - w.start_s, 3)
    (300.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meter.testing.clock import FakeClock
from meter.testing.simgpu import SimulatedGPU
from meter.windows import Window

if TYPE_CHECKING:
    from meter.core import Meter

__all__ = ["ReplayedWindow", "advance", "advance_to", "replay_windows"]

_NO_IDLE_FILE = "/nonexistent/meter-idle.json"


def advance_to(meter: Meter, clock: FakeClock, t: float) -> None:
    """Move ``clock`` to time ``t`` (or stay, if it is past it), running the sampler of
    ``meter`` (built with ``clock=clock, sleep=clock.sleep, background=False``) at every tick it
    has due on the way, as its thread would. The meter must be started."""
    next_tick = meter.sampler.next_tick_s
    while next_tick is not None and next_tick <= t:
        clock.set(max(next_tick, clock()))
        next_tick = meter.sampler.run_once()
    clock.set(max(t, clock()))


def advance(meter: Meter, clock: FakeClock, seconds: float) -> None:
    """`advance_to` ``seconds`` from now: what ``time.sleep(seconds)`` is to a real meter.

    >>> from meter.testing.simgpu import SimulatedGPU
    >>> from meter.testing.nvml import FakeNVML
    >>> from meter import Meter
    >>> clock = FakeClock()
    >>> m = Meter(nvml=FakeNVML([SimulatedGPU(300.0, clock=clock)]), cpu=False,
    ...           clock=clock, sleep=clock.sleep, background=False, carbon=False)
    >>> with m.measure() as w:
    ...     advance(m, clock, 2.0)
    >>> round(w.result.energy_j)
    600
    """
    advance_to(meter, clock, clock() + seconds)


@dataclass(frozen=True)
class ReplayedWindow:
    """One window: replay times (seconds since the GPU's creation) of its actual boundaries,
    what meter measured, and whether meter flagged it approximate."""

    start_s: float
    end_s: float
    metered_j: float
    approximate: bool


def replay_windows(
    gpu: SimulatedGPU,
    clock: FakeClock,
    windows: Sequence[tuple[float, float]],
    *,
    interval_s: float = 0.1,
    meter_start_s: float | None = None,
    **meter_options: Any,
) -> list[ReplayedWindow]:
    """Meter ``gpu`` (built with ``clock=clock``) and measure each ``(start, end)`` window, in
    seconds since the GPU's creation, through ``meter.measure()``; ``meter_options`` go to the
    `Meter` (``gpu_correction="auto"``, ...). The meter starts at ``meter_start_s`` (default:
    a second before the first window, or 0: time for the counters' phase lock) and samples
    every ``interval_s`` on ``clock``. Windows may overlap. Results come in the order given."""
    from meter.core import Meter
    from meter.testing.nvml import FakeNVML

    if not windows:
        return []
    base = gpu.created_s
    first = min(start for start, _ in windows)
    if meter_start_s is None:
        meter_start_s = max(first - 1.0, 0.0)  # room for the counters' calibration
    clock.set(max(base + meter_start_s, clock()))
    m = Meter(
        nvml=FakeNVML([gpu]),
        cpu=False,
        carbon=False,
        embodied=False,
        idle_file=_NO_IDLE_FILE,
        interval_s=interval_s,
        clock=clock,
        sleep=clock.sleep,
        background=False,
        **meter_options,
    )
    try:
        m.start()
        events = sorted(
            [(base + start, 0, i) for i, (start, _) in enumerate(windows)]
            + [(base + end, 1, i) for i, (_, end) in enumerate(windows)]
        )
        open_windows: dict[int, tuple[Window, float]] = {}
        results: dict[int, ReplayedWindow] = {}
        for t, kind, i in events:
            advance_to(m, clock, t)
            if kind == 0:
                window = m.measure("replay")
                window.start()
                open_windows[i] = (window, clock())
            else:
                window, started = open_windows.pop(i)
                result = window.stop()
                if result is None:
                    raise RuntimeError(f"window {windows[i]} failed to measure (see the log)")
                results[i] = ReplayedWindow(
                    start_s=started - base,
                    end_s=clock() - base,
                    metered_j=result.devices["gpu:0"].energy_j,
                    approximate=result.devices["gpu:0"].approximate,
                )
        return [results[i] for i in range(len(windows))]
    finally:
        m.close()

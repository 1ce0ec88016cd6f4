"""`FakeClock`: a monotonic clock that moves only when told to, for tests and replays.

>>> clock = FakeClock()
>>> clock.sleep(0.25)
>>> clock()
100.25
"""

from __future__ import annotations

import math
import threading

__all__ = ["FakeClock"]


class FakeClock:
    """Seconds that move only through `advance`, `sleep` or `set` (never backwards).

    Pass it as ``clock=`` and its `sleep` as ``sleep=`` (``Meter``, ``Sampler``,
    ``SimulatedGPU``) to run timing logic in microseconds of real time. Thread-safe.
    """

    def __init__(self, start: float = 100.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._t

    def __repr__(self) -> str:
        return f"FakeClock({self._t!r})"

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); returns the new time."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"FakeClock can only move forward, got {seconds!r} seconds")
        with self._lock:
            self._t += seconds
            return self._t

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` would do, on this clock: advance (negative means no wait)."""
        self.advance(max(seconds, 0.0))

    def set(self, t: float) -> None:
        """Move to time ``t`` (not before now)."""
        with self._lock:
            if t < self._t:
                raise ValueError(f"FakeClock cannot go back from {self._t!r} to {t!r}")
            self._t = float(t)

"""A run's power timeline: per device, mean, min and max watts in a bounded number of buckets.

A run's record carries how its power went over time, whatever the run's length, in a size that
does not grow with it: at most `MAX_POINTS` fixed-width buckets per device. The buckets start
`initial_bucket_s` wide (two sampling intervals by default: the sampler's ticks are spread
+-12.5 % around their slots, so a bucket of one interval would now and then catch none); when a
sample falls past the last bucket, neighbouring pairs are merged, which doubles the width and
halves the count. Each bucket keeps the sum, count, minimum and maximum of its samples, so the
mean, minimum and maximum after any number of merges are those of the samples it covers, as if
it had been that wide from the start. A 24-hour run at 10 Hz ends with 1,688 buckets of 51.2 s.

The sampler feeds it once per tick (`Timeline.attach` adds it to ``Sampler.on_tick``): it reads
the ledger's published snapshots, O(devices) per tick, plus one merge pass over at most
`MAX_POINTS` buckets each time the width doubles. A device that cannot be read (an error, a
gap) adds nothing: a bucket with no sample of a device is null in its lists.

    >>> tl = Timeline(["gpu:0"], t0=0.0, wall0=1_700_000_000.0, initial_bucket_s=1.0, max_points=4)
    >>> for t, w in [(0.2, 100.0), (0.7, 300.0), (1.5, 250.0), (4.5, 50.0)]:
    ...     tl.add(t, [w])
    >>> d = tl.to_dict()
    >>> d["bucket_s"], d["devices"]["gpu:0"]["mean_w"], d["devices"]["gpu:0"]["max_w"]
    (2.0, [216.7, None, 50.0], [300.0, None, 50.0])
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meter.core import Meter

__all__ = ["MAX_POINTS", "Timeline"]

#: The most buckets a timeline keeps per device.
MAX_POINTS = 2000


class _Buckets:
    """One device's buckets: sum, count, min and max of its samples in each."""

    __slots__ = ("count", "high", "low", "total")

    def __init__(self) -> None:
        self.total: list[float] = []
        self.count: list[int] = []
        self.low: list[float] = []
        self.high: list[float] = []

    def extend_to(self, n: int) -> None:
        missing = n - len(self.count)
        if missing > 0:
            self.total.extend([0.0] * missing)
            self.count.extend([0] * missing)
            self.low.extend([math.inf] * missing)
            self.high.extend([-math.inf] * missing)

    def add(self, i: int, watts: float) -> None:
        self.total[i] += watts
        self.count[i] += 1
        if watts < self.low[i]:
            self.low[i] = watts
        if watts > self.high[i]:
            self.high[i] = watts

    def halve(self) -> None:
        """Merge buckets 2k and 2k+1 into k (a last odd one stands alone)."""
        n = len(self.count)
        total, count, low, high = self.total, self.count, self.low, self.high
        self.total = [total[k] + (total[k + 1] if k + 1 < n else 0.0) for k in range(0, n, 2)]
        self.count = [count[k] + (count[k + 1] if k + 1 < n else 0) for k in range(0, n, 2)]
        self.low = [min(low[k : k + 2]) for k in range(0, n, 2)]
        self.high = [max(high[k : k + 2]) for k in range(0, n, 2)]

    def lists(self, n: int) -> dict[str, list[float | None]]:
        self.extend_to(n)
        mean: list[float | None] = []
        low: list[float | None] = []
        high: list[float | None] = []
        for total, count, lo, hi in zip(self.total, self.count, self.low, self.high, strict=True):
            if count:
                mean.append(round(total / count, 1))
                low.append(round(lo, 1))
                high.append(round(hi, 1))
            else:
                mean.append(None)
                low.append(None)
                high.append(None)
        return {"mean_w": mean, "min_w": low, "max_w": high}


class Timeline:
    """Per-device power in at most ``max_points`` fixed-width buckets, widened as time goes on.

    ``keys``: the devices, in the order of the powers given to `add`. ``t0``: the clock time
    (monotonic seconds) where bucket 0 starts; ``wall0``: the wall-clock time (epoch seconds)
    at ``t0``. ``labels``: per key, what the record says of it (``method``, ``kind``).
    Bucket ``i`` covers ``[t0 + i * bucket_s, t0 + (i + 1) * bucket_s)``.
    """

    def __init__(
        self,
        keys: Sequence[str],
        *,
        t0: float,
        wall0: float,
        initial_bucket_s: float,
        max_points: int = MAX_POINTS,
        labels: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if max_points < 2 or max_points % 2:
            raise ValueError(f"max_points must be an even number >= 2, got {max_points}")
        if not (initial_bucket_s > 0 and math.isfinite(initial_bucket_s)):
            raise ValueError(f"initial_bucket_s must be a positive number, got {initial_bucket_s}")
        self.keys = tuple(keys)
        self.t0 = t0
        self.wall0 = wall0
        self.bucket_s = float(initial_bucket_s)
        self.max_points = max_points
        self.labels = {key: dict((labels or {}).get(key, {})) for key in self.keys}
        self._buckets = [_Buckets() for _ in self.keys]
        self._n = 0  # buckets in use (every device's lists are this long)
        self._lock = threading.Lock()
        #: What `sample` reads: the clock and each device's power (set by `attach`).
        self._source: Callable[[], tuple[float, Sequence[float | None]]] | None = None

    @classmethod
    def attach(
        cls, meter: Meter, *, initial_bucket_s: float | None = None, max_points: int = MAX_POINTS
    ) -> Timeline:
        """A timeline of ``meter``'s devices from its start, fed at every sampler tick.

        The meter must be started (its start time is bucket 0's). The callback reads the
        ledger's published snapshots (no device call)."""
        meter.start()
        assert meter.started_at is not None and meter.started_wall is not None
        ledger = meter.ledger
        timeline = cls(
            ledger.keys,
            t0=meter.started_at,
            wall0=meter.started_wall,
            initial_bucket_s=initial_bucket_s or 2 * meter.interval_s,
            max_points=max_points,
            labels={i.key: {"method": i.method, "kind": i.kind} for i in meter.devices},
        )

        def read() -> tuple[float, list[float | None]]:
            # A device that cannot be read now (failed, or in a gap) adds no sample.
            snaps = ledger.published
            return ledger.clock(), [
                None
                if s.t is None or s.error is not None or s.unreadable_since is not None
                else s.power_w
                for s in snaps
            ]

        timeline._source = read
        meter.sampler.on_tick.append(timeline.sample)
        return timeline

    def sample(self) -> None:
        """Add the attached meter's published power now: what each sampler tick calls, and
        what the end of a run calls once more so that the timeline reaches it."""
        if self._source is None:
            raise RuntimeError("this timeline is not attached to a meter: use Timeline.attach")
        t, power_w = self._source()
        self.add(t, power_w)

    @property
    def points(self) -> int:
        """Buckets in use."""
        return self._n

    def add(self, t: float, power_w: Sequence[float | None]) -> None:
        """One sample per device (in ``keys`` order) at clock time ``t``; None: no reading."""
        with self._lock:
            i = int(max(t - self.t0, 0.0) // self.bucket_s)
            while i >= self.max_points:
                for buckets in self._buckets:
                    buckets.halve()
                self._n = (self._n + 1) // 2
                self.bucket_s *= 2
                i = int(max(t - self.t0, 0.0) // self.bucket_s)
            if i >= self._n:
                self._n = i + 1
            for buckets, watts in zip(self._buckets, power_w, strict=True):
                if watts is None or not math.isfinite(watts):
                    continue
                buckets.extend_to(i + 1)
                buckets.add(i, watts)

    def to_dict(self) -> dict[str, Any]:
        """The record's ``timeline``: ``t0`` (wall-clock epoch seconds of bucket 0's start),
        ``bucket_s``, and per device its labels and ``mean_w``, ``min_w``, ``max_w`` (watts to
        0.1 W, null for a bucket without a sample), all of one length."""
        with self._lock:
            return {
                "t0": self.wall0,
                "bucket_s": self.bucket_s,
                "devices": {
                    key: {**self.labels[key], **buckets.lists(self._n)}
                    for key, buckets in zip(self.keys, self._buckets, strict=True)
                },
            }

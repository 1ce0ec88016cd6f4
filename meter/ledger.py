"""The ledger: per-device cumulative energy E_d(t) built from reads, and a bounded history.

Every read of a device, by the sampler or at a window boundary, goes through `Track.observe`,
which holds the device's lock around the read so observations arrive in time order. A track
turns reads into an estimate of cumulative joules at the read time:

* counter devices: the raw counter, interpolated between the counter's updates by a
  `StepModel` once it is phase-locked (see stepclock.py);
* power devices: power readings integrated with the trapezoid rule between reads.

A device that raises is marked failed with its error; its energy stays frozen at the last good
value and the other devices go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meter.carbon.accounting import CarbonRate
from meter.devices.base import Device, DeviceInfo
from meter.stepclock import CONTINUOUS_BELOW_S, POLL_S, StepModel

#: A capture bracket wider than this (a descheduled poll) is not used to refine the lock.
MAX_BRACKET_S = 0.002

log = logging.getLogger("meter")

Clock = Callable[[], float]
#: (cumulative joules, location CO2e g, market CO2e g) of one device, as integrated so far.
Carbon = tuple[float, float, float]


@dataclass(frozen=True)
class Sample:
    """One sampler tick: monotonic time, wall time, and per-device energy and power."""

    t: float
    wall: float
    energy_j: tuple[float, ...]
    power_w: tuple[float, ...]


class Track:
    """The state of one device in the ledger."""

    def __init__(self, device: Device, clock: Clock, rate: CarbonRate | None = None) -> None:
        self.device = device
        #: Carbon rates in force (g/J, PUE included), shared with the accountant.
        self.rate = rate
        self.co2e_g = 0.0  # cumulative location-based CO2e of this device
        self.co2e_market_g = 0.0
        self.info: DeviceInfo = device.info
        self.clock = clock
        self.lock = threading.Lock()
        self.error: str | None = None
        self.failed_at: float | None = None
        self.reads = 0
        self.read_errors = 0
        self.t_last: float | None = None
        self.energy_j = 0.0  # estimated cumulative energy at t_last
        self.power_w = 0.0  # latest power estimate
        self.raw_last = 0.0  # latest raw counter value
        self.missed_captures = 0
        self._change: tuple[float, float] | None = None  # (time, value) of the last raw change
        # Boundary reads hit the hardware for counters (RAPL, NVML) and for GPUs read through
        # their power field: a read at the boundary tells whether the reading changed since the
        # last tick, which halves the worst error of a window that ends just after a load step
        # (recorded A100 step load, 1 s windows: 4.5 % -> 3.7 %). Estimates are extrapolated
        # from the sampler's latest read instead.
        hardware = self.info.method in ("counter", "sampled", "simulated")
        self.boundary_reads = hardware and (self.info.counter or self.info.kind == "gpu")
        # Only hardware counters step; an estimate integrates continuously.
        self.model: StepModel | None = (
            StepModel() if self.boundary_reads and self.info.counter else None
        )
        #: What readers that must not wait on a device see: (t_last, joules, watts, location g,
        #: market g, failed), replaced as one tuple (an atomic store) after each update, so a
        #: lock-free read is never torn. The sampler holds ``lock`` during a device call, which
        #: a hung driver can stretch without bound; the request path reads this instead.
        self.published: tuple[float | None, float, float, float, float, bool] = (
            None,
            0.0,
            0.0,
            0.0,
            0.0,
            False,
        )

    # -- reading -----------------------------------------------------------------------------

    def _read_raw(self) -> tuple[float, float | None, float | None]:
        """One read, timed at its midpoint. Caller holds the lock."""
        t0 = self.clock()
        reading = self.device.read()
        t1 = self.clock()
        self.reads += 1
        return (t0 + t1) / 2, reading.energy_j, reading.power_w

    def observe(self) -> float:
        """Read the device now and return its estimated cumulative joules. Never raises."""
        with self.lock:
            if self.error is None:
                self._poll()
            return self.energy_j

    def _poll(self) -> tuple[float, float] | None:
        """Read and account one observation; (read time, raw counter value), or None when the
        device failed (it is then marked). Caller holds the lock."""
        try:
            t, energy, power = self._read_raw()
        except Exception as exc:
            self._fail(exc)
            return None
        self._update(t, energy, power)
        return t, float(energy or 0.0)

    def _update(self, t: float, energy: float | None, power: float | None) -> float:
        before = self.energy_j
        self._integrate(t, energy, power)
        rate = self.rate
        if rate is not None and self.energy_j > before:
            # Price this increment at the intensity in force now: CO2e per sample interval.
            loc, market = rate.rates
            delta = self.energy_j - before
            self.co2e_g += delta * loc
            if market is not None:
                self.co2e_market_g += delta * market
        self._publish()
        return self.energy_j

    def _publish(self) -> None:
        self.published = (
            self.t_last,
            self.energy_j,
            self.power_w,
            self.co2e_g,
            self.co2e_market_g,
            self.error is not None,
        )

    def carbon_state(self) -> Carbon:
        """(cumulative joules, location CO2e g, market CO2e g) as integrated so far. Lock-free
        (`published`): never waits on a device call in progress."""
        _, energy, _, co2e, market, _ = self.published
        return energy, co2e, market

    def _integrate(self, t: float, energy: float | None, power: float | None) -> None:
        prev_t = self.t_last
        if self.info.counter:
            value = float(energy or 0.0)
            model = self.model
            if model is not None:
                model.observe(t, value)
                estimate = model.energy_at(t, value)
            else:
                estimate = value
            if prev_t is not None and t > prev_t:
                if power is not None:
                    self.power_w = power
                elif model is not None and model.locked:
                    self.power_w = model.rate_w
                elif value != self.raw_last:
                    # Unlocked counter: power between two successive changes of the raw value
                    # (a delta between arbitrary reads of a stepping counter aliases badly).
                    if self._change is not None and t > self._change[0]:
                        self.power_w = (value - self._change[1]) / (t - self._change[0])
                    self._change = (t, value)
            self.raw_last = value
            self.energy_j = max(estimate, self.energy_j)
        else:
            p = max(float(power or 0.0), 0.0)
            if prev_t is not None and t > prev_t:
                self.energy_j += (self.power_w + p) / 2 * (t - prev_t)
            self.power_w = p
        self.t_last = t

    def _fail(self, exc: BaseException) -> None:
        self.read_errors += 1
        self.error = f"{type(exc).__name__}: {exc}"
        self.failed_at = self.clock()
        self._publish()
        log.warning(
            "meter: %s stopped being readable and is skipped from now on (%s); "
            "its energy so far is kept.",
            self.info.key,
            self.error,
        )

    def boundary(self, t: float, read: bool) -> tuple[float, float | None, Carbon]:
        """`energy_now`, the raw counter value when the phase lock was not yet known (so the
        window can redo the interpolation at exit, `retro_energy`), and the carbon state."""
        energy = self.energy_now(t, read)
        carbon = (self.energy_j, self.co2e_g, self.co2e_market_g)  # floats: atomic reads
        model = self.model
        if read and self.boundary_reads and model is not None and not model.locked:
            return energy, self.raw_last, carbon
        return energy, None, carbon

    def retro_energy(self, t: float, raw: float | None) -> float | None:
        """Better joules for an earlier boundary at ``t``, now that more is known: between the
        counter values published around it (so a load change just before ``t`` is not
        extrapolated across it), else, for a read made before the lock existed (``raw``), the
        lock's interpolation from that read. None when neither applies."""
        model = self.model
        if model is None or not model.locked:
            return None
        with self.lock:
            better = model.interpolate(t)
            if better is None and raw is not None:
                better = model.energy_then(t, raw)
            return better

    def energy_now(self, t: float, read: bool) -> float:
        """Cumulative joules at time ``t`` (taken just before this call): a fresh read for
        cheap counters when ``read``, else the latest estimate extrapolated with the latest
        power. Either way the figure is moved to ``t`` with the current power, so a read that
        waited for the lock (a busy machine, many threads) is not credited with the wait.
        Not clamped to be monotonic across callers; `Group` and windows clamp their deltas."""
        if read and self.boundary_reads and self.error is None:
            with self.lock:
                if self.error is None:
                    model = self.model
                    if (
                        model is not None
                        and model.locked
                        and not model.continuous
                        and t + model.tolerance_s(t) < model.step_time(model.k_last + 1)
                    ):
                        # The phase lock says the counter cannot have published a new value
                        # since the value last seen: a read would return it again. Skip the
                        # device call and interpolate from it.
                        return max(model.energy_at(t, model.v_last), self.energy_j)
                    polled = self._poll()
                    if polled is None:
                        return self.energy_j
                    t_read = polled[0]
                    return self.energy_j - self.power_w * min(max(t_read - t, 0.0), 1.0)
        # Lock-free: a window with read_devices=False (the ASGI middleware) must not wait for
        # the sampler's device call in progress.
        t_last, value, power, _, _, failed = self.published
        if not failed and t_last is not None:
            value += power * min(max(t - t_last, -1.0), 2.0)
        return value

    # -- phase lock (called by the sampler thread only) --------------------------------------

    def needs_calibration(self) -> bool:
        model = self.model
        return (
            model is not None and not model.locked and not model.continuous and self.error is None
        )

    def calibrate_start(self) -> None:
        self._cal: dict[str, list[float]] = {"times": [], "values": [], "gaps": [], "last": []}

    def calibrate_poll(self) -> bool:
        """One fast poll of a calibration; True once enough was seen (or the device failed)."""
        cal = self._cal
        with self.lock:
            polled = self._poll()
        if polled is None:
            return True
        t, v = polled
        last = cal["last"]
        if last and v != last[1]:
            mid = (last[0] + t) / 2
            if cal["times"]:
                cal["gaps"].append(mid - cal["times"][-1])
            cal["times"].append(mid)
            cal["values"].append(v)
        cal["last"] = [t, v]
        gaps = cal["gaps"]
        if len(gaps) >= 5 and sorted(gaps)[len(gaps) // 2] < CONTINUOUS_BELOW_S:
            return True
        return len(cal["times"]) >= 3 and (len(gaps) >= 5 or gaps[-1] >= CONTINUOUS_BELOW_S)

    def calibrate_finish(self) -> None:
        cal = self.__dict__.pop("_cal", None)
        model = self.model
        if model is None or cal is None:
            return
        times, values = cal["times"][-3:], cal["values"][-3:]
        with self.lock:
            model.calibrate(times, values, cal["gaps"])
        log.debug("meter: %s counter %s", self.info.key, model.state)

    def capture_due(self, now: float, every_s: float) -> float | None:
        """The predicted time of the next step to capture, if a capture is due."""
        model = self.model
        if model is None or not model.locked or self.error is not None:
            return None
        if model.captures < 3:
            every_s = min(every_s, 0.5 * (model.captures + 1))  # refine fast after a lock
        if now - model.last_capture_s < every_s:
            return None
        return self._next_capturable(model, now)[1]

    @staticmethod
    def _next_capturable(model: StepModel, now: float) -> tuple[int, float]:
        """The first predicted step whose whole uncertainty window is still ahead of ``now``
        (a step that may already have happened cannot be bracketed)."""
        k, predicted = model.next_step_after(now)
        while predicted - model.tolerance_s(predicted) - POLL_S < now:
            k += 1
            predicted = model.step_time(k)
        return k, predicted

    def capture(
        self, wait: Callable[[float], bool], sleep: Callable[[float], None] = time.sleep
    ) -> None:
        """Bracket the next predicted counter step with fast polls and refine the lock.
        ``wait(seconds)`` waits (True: stop now), ``sleep`` paces the polls: the sampler's."""
        model = self.model
        if model is None or not model.locked:
            return
        now = self.clock()
        k, predicted = self._next_capturable(model, now)
        tol = model.tolerance_s(predicted)
        start = predicted - tol - POLL_S
        if start > now and wait(start - now):
            return
        deadline = predicted + tol + 2 * POLL_S
        with self.lock:
            polled = self._poll()
        if polled is None:
            return
        t_prev, v_prev = polled
        # A change seen between two close reads brackets step k whenever the burst started:
        # a burst that woke too late would see no change before its deadline. But a burst that
        # woke late, or was descheduled between reads, proves nothing by seeing *no* change,
        # so only a continuous, timely burst counts a miss.
        continuous = t_prev <= predicted - tol
        while True:
            with self.lock:
                polled = self._poll()
                if polled is None:
                    return
                t, v = polled
                narrow = t - t_prev <= MAX_BRACKET_S
                continuous = continuous and narrow
                if v != v_prev:
                    if narrow:
                        model.capture(k, t_prev, t, v)
                        self.missed_captures = 0
                    else:
                        model.last_capture_s = t  # too wide to refine anything; retry later
                    return
            if t > deadline:
                with self.lock:
                    model.last_capture_s = t
                    if continuous and model.rate_w > 0:
                        # The counter did not step where predicted although power flows:
                        # once may be driver jitter, twice in a row means the lock is wrong.
                        self.missed_captures += 1
                        if self.missed_captures >= 2:
                            model.unlock()
                            self.missed_captures = 0
                return
            t_prev, v_prev = t, v
            sleep(POLL_S)  # a burst of a few ms at most: sleep is cheaper than Event.wait

    def step_period_s(self) -> float | None:
        model = self.model
        if model is not None and model.locked:
            return model.period_s
        return None


class Ledger:
    """All tracks of a meter, plus the bounded sample history the sampler appends to."""

    def __init__(
        self,
        devices: Sequence[Device],
        clock: Clock,
        history: int = 6000,
        rate: CarbonRate | None = None,
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.tracks = [Track(d, clock, rate) for d in devices]
        self.keys = tuple(t.info.key for t in self.tracks)
        self.samples: deque[Sample] = deque(maxlen=history)
        # Coarse history: per-device peak power per block of samples, so a window longer than
        # the fine history still gets a peak. Bounded as well.
        self.coarse: deque[tuple[float, float, tuple[float, ...]]] = deque(maxlen=history)
        self._coarse_block: list[Sample] = []
        self.coarse_every = 100

    def snapshot(self, read: bool) -> tuple[float, tuple[float, ...]]:
        """Time and per-device cumulative joules now."""
        t = self.clock()
        return t, tuple(track.energy_now(t, read) for track in self.tracks)

    def carbon_state(self) -> tuple[Carbon, ...]:
        return tuple(track.carbon_state() for track in self.tracks)

    def record(self, t: float, wall: float) -> Sample:
        sample = Sample(
            t=t,
            wall=wall,
            energy_j=tuple(track.energy_j for track in self.tracks),
            power_w=tuple(track.power_w for track in self.tracks),
        )
        self.samples.append(sample)
        block = self._coarse_block
        block.append(sample)
        if len(block) >= self.coarse_every:
            peaks = tuple(max(s.power_w[i] for s in block) for i in range(len(self.tracks)))
            self.coarse.append((block[0].t, block[-1].t, peaks))
            block.clear()
        return sample

    def peak_power(self, t0: float, t1: float) -> tuple[float, ...]:
        """Per-device peak of the sampled power over [t0, t1] (0 where nothing was sampled)."""
        n = len(self.tracks)
        peaks = [0.0] * n
        samples = self.samples
        count = len(samples)
        oldest = samples[0].t if count else t1
        # Walk back from the newest sample by index: no copy of the history, O(1) per step near
        # the end of a deque, and safe while the sampler appends (the length never shrinks).
        for j in range(count - 1, -1, -1):
            s = samples[j]
            if s.t < t0:
                break
            if s.t <= t1:
                for i in range(n):
                    if s.power_w[i] > peaks[i]:
                        peaks[i] = s.power_w[i]
        if t0 < oldest:
            for start, end, block_peaks in self.coarse:
                if end >= t0 and start <= min(t1, oldest):
                    for i in range(n):
                        if block_peaks[i] > peaks[i]:
                            peaks[i] = block_peaks[i]
        return tuple(peaks)

    def energy_at_past(self, t: float) -> tuple[float, ...] | None:
        """Per-device joules at a past time ``t``, interpolated between the two samples around
        it, or None when the history does not bracket ``t``."""
        samples = self.samples
        if len(samples) < 2 or not samples[0].t <= t <= samples[-1].t:
            return None
        # Binary search over the deque by index (deque indexing is O(n) at the middle, but
        # windows ask this once at exit; keep it simple and bounded).
        lo, hi = 0, len(samples) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if samples[mid].t <= t:
                lo = mid
            else:
                hi = mid
        a, b = samples[lo], samples[hi]
        span = b.t - a.t
        f = (t - a.t) / span if span > 0 else 0.0
        return tuple(ea + (eb - ea) * f for ea, eb in zip(a.energy_j, b.energy_j, strict=True))

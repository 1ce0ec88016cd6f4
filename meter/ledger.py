"""The ledger: per-device cumulative energy E_d(t) built from reads, and a bounded history.

Every read of a device, by the sampler or at a window boundary, goes through `Track.observe`,
which holds the device's lock around the read so observations arrive in time order. A track
turns reads into an estimate of cumulative joules at the read time:

* counter devices: the raw counter, interpolated between the counter's updates by a
  `StepModel` once it is phase-locked (see stepclock.py);
* power devices: power readings integrated with the trapezoid rule between reads.

A device that fails a read is retried with backoff (`RETRY_FIRST_S` doubling to `RETRY_MAX_S`)
and marked failed only after `FAIL_AFTER_READS` failures in a row over at least `FAIL_AFTER_S`;
a failed device is probed every `PROBE_EVERY_S` and resumes when it answers again. The time it
could not be read is recorded as a gap (``Snapshot.unreadable_since``/``unreadable_s``): a
counter covers it when the device comes back, power readings are interpolated across it
(estimated), and a window that ends inside it says its energy there is missing. A read whose
value cannot be true (`meter.errors.BadReading`) is ignored and counted; a GPU whose energy
counter stops answering falls back to power readings (`meter.errors.MethodChanged`).

No reader waits on a hung device call: the sampler skips a device whose call is still in
progress, a window boundary waits at most `BOUNDARY_WAIT_S` for it and then extrapolates the
published figure (flagged), and a call that returns late is timed at its end, so the energy it
reports never lands before a boundary that passed while it hung.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from meter.carbon.accounting import CarbonRate
from meter.devices.base import Device, DeviceInfo
from meter.errors import BadReading, MethodChanged
from meter.stepclock import CONTINUOUS_BELOW_S, POLL_S, StepModel, StepView

#: A capture bracket wider than this (a descheduled poll) is not used to refine the lock.
MAX_BRACKET_S = 0.002
#: A published figure is carried forward with its power for at most this long: a stalled
#: sampler must not make the figures run on.
MAX_EXTRAPOLATION_S = 2.0
#: The longest a window boundary waits for a device call in progress (the sampler's read)
#: before it uses the published figure instead, extrapolated and flagged.
BOUNDARY_WAIT_S = 0.002
#: A read that took longer than this is timed at its end rather than its midpoint: what it
#: returns may include energy up to its end, which must not land before a boundary that
#: passed meanwhile. (Not lower: on a busy machine a read is often descheduled for a few
#: milliseconds, and a read timed at its end does not feed the counter's phase lock.)
SLOW_READ_S = 0.05
#: A device call in progress for this long is stalled: the device shows as unreadable from the
#: call's start, and the sampler goes on with the other devices (`meter.sampler`).
STALL_S = 1.0
#: After a failed read, the device is read again after this long, doubling per failure...
RETRY_FIRST_S = 0.1
#: ... up to this.
RETRY_MAX_S = 5.0
#: A device is marked failed (``Snapshot.error``) after this many failed reads in a row...
FAIL_AFTER_READS = 5
#: ... spanning at least this long; one transient error never does it.
FAIL_AFTER_S = 10.0
#: A failed device is probed this often, and resumes when it answers.
PROBE_EVERY_S = 30.0

log = logging.getLogger("meter")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Sample:
    """One sampler tick: monotonic time, wall time, and per-device energy and power."""

    t: float
    wall: float
    energy_j: tuple[float, ...]
    power_w: tuple[float, ...]


class CarbonState(NamedTuple):
    """A device's cumulative joules and the CO2e priced on them so far."""

    energy_j: float
    co2e_g: float
    co2e_market_g: float


class Snapshot(NamedTuple):
    """What one track published after its latest update: every reader that must not wait on a
    device call reads this (it is replaced whole, an atomic store, never torn)."""

    #: Monotonic time of the latest update (None before the first read).
    t: float | None
    #: Cumulative joules at ``t`` (never decreasing).
    energy_j: float
    #: Latest power, watts.
    power_w: float
    #: Cumulative location-based and market-based CO2e, grams.
    co2e_g: float
    co2e_market_g: float
    #: Why the device stopped being readable, or None.
    error: str | None
    #: Failed reads so far.
    read_errors: int
    #: True for a counter that publishes in steps (it has a phase lock to keep).
    stepping: bool
    #: The phase lock's prediction while locked, else None.
    steps: StepView | None
    #: Reads ignored because their value could not be true (`meter.errors.BadReading`).
    rejected_reads: int = 0
    #: Since when the device could not be read (failed reads or a call that hangs), or None.
    unreadable_since: float | None = None
    #: Seconds the device could not be read before ``unreadable_since``'s gap (closed gaps).
    unreadable_s: float = 0.0
    #: When its energy counter stopped answering and power readings took over, or None.
    fallback_at: float | None = None
    #: The error of the current run of failed reads (retried; ``error`` once marked failed).
    last_error: str | None = None

    def unreadable_until(self, t: float) -> float:
        """Seconds the device could not be read, from its opening to ``t``."""
        since = self.unreadable_since
        return self.unreadable_s + (t - since if since is not None and t > since else 0.0)

    def energy_at(self, t: float) -> float:
        """Joules at ``t``: the published figure moved to ``t`` with the latest power (back by
        at most 1 s, forward by at most `MAX_EXTRAPOLATION_S`, so a stalled sampler does not
        make the figure run on, nor past the moment the device stopped answering: that time
        is a gap, reported as missing). The one extrapolation every lock-free reader uses."""
        if self.error is not None or self.t is None:
            return self.energy_j
        since = self.unreadable_since
        dt = min(
            max((t if since is None or t < since else since) - self.t, -1.0), MAX_EXTRAPOLATION_S
        )
        return self.energy_j + self.power_w * dt

    @property
    def carbon(self) -> CarbonState:
        return CarbonState(self.energy_j, self.co2e_g, self.co2e_market_g)


class LockState(NamedTuple):
    """A counter's phase lock, for diagnostics, tests and benchmarks."""

    locked: bool
    continuous: bool
    period_s: float | None
    captures: int
    failures: int


@dataclass
class _Calibration:
    """A calibration in progress: the brackets of the counter's steps seen by fast polls."""

    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    last: tuple[float, float] | None = None


_EMPTY = Snapshot(None, 0.0, 0.0, 0.0, 0.0, None, 0, False, None)


def _reads_at_boundaries(info: DeviceInfo) -> bool:
    """Whether window boundaries read the device: hardware counters (RAPL, NVML) and GPUs read
    through their power field; estimates are extrapolated from the sampler's latest read."""
    hardware = info.method in ("counter", "sampled", "simulated")
    return hardware and (info.counter or info.kind == "gpu")


class Track:
    """The state of one device in the ledger. Readers use `snapshot` and the public methods;
    everything else is the sampler's (under the device's lock)."""

    def __init__(self, device: Device, clock: Clock, rate: CarbonRate | None = None) -> None:
        self.device = device
        self.info: DeviceInfo = device.info
        self._rate = rate  # carbon rates in force (g/J, PUE included), shared with the accountant
        self._clock = clock
        self._lock = threading.Lock()
        self._co2e_g = 0.0
        self._co2e_market_g = 0.0
        self._error: str | None = None  # marked failed (still probed every PROBE_EVERY_S)
        self._reads = 0
        self._read_errors = 0
        self._rejected = 0
        self._failures = 0  # failed reads in a row
        self._retry_at: float | None = None  # no read before this (backoff)
        self._last_error: str | None = None
        self._unreadable_since: float | None = None
        self._unreadable_s = 0.0
        self._fallback_at: float | None = None
        #: Start of the device call in progress (None when none), and its thread: the
        #: sampler's watchdog reads them without the lock, which a hung call holds.
        self.busy_since: float | None = None
        self.busy_thread: int | None = None
        #: The time of the latest boundary that did not wait for a call in progress.
        self.late_at: float | None = None
        self._publish_lock = threading.Lock()
        self._t_last: float | None = None
        self._energy_j = 0.0  # estimated cumulative energy at _t_last
        self._power_w = 0.0  # latest power estimate
        self._raw_last = 0.0  # latest raw counter value
        self._missed_captures = 0
        self._change: tuple[float, float] | None = None  # (time, value) of the last raw change
        self._calibration: _Calibration | None = None
        # Boundary reads hit the hardware for counters (RAPL, NVML) and for GPUs read through
        # their power field: a read at the boundary tells whether the reading changed since the
        # last tick, which halves the worst error of a window that ends just after a load step
        # (recorded A100 step load, 1 s windows: 4.5 % -> 3.7 %). Estimates are extrapolated
        # from the sampler's latest read instead.
        self._boundary_reads = _reads_at_boundaries(self.info)
        # Only hardware counters step; an estimate integrates continuously.
        self._model: StepModel | None = (
            StepModel() if self._boundary_reads and self.info.counter else None
        )
        #: Replaced whole after each update. The sampler holds the device's lock during a
        #: device call, which a hung driver can stretch without bound: readers on the request
        #: path read this instead.
        self._published = _EMPTY._replace(stepping=self._model is not None)
        #: Called after each publication (the ledger keeps every track's latest in one tuple).
        self._on_publish: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Track({self.info.key!r}, {self._published!r})"

    # -- what readers use ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The latest published state (lock-free)."""
        return self._published

    @property
    def reads_at_boundaries(self) -> bool:
        """Whether window boundaries read this device (else they extrapolate its snapshot)."""
        return self._boundary_reads

    def lock_state(self) -> LockState:
        """The counter's phase lock (all False/None for devices without one)."""
        model = self._model
        if model is None:
            return LockState(False, False, None, 0, 0)
        return LockState(
            model.locked,
            model.continuous,
            model.period_s if model.locked else None,
            model.captures,
            model.failures,
        )

    # -- reading -----------------------------------------------------------------------------

    def _read_raw(self) -> tuple[float, float | None, float | None, bool]:
        """One read: (time, joules, watts, slow). Timed at its midpoint, or at its end when it
        took longer than `SLOW_READ_S` (slow). Caller holds the lock."""
        t0 = self._clock()
        self.busy_thread = threading.get_ident()
        self.busy_since = t0
        try:
            reading = self.device.read()
        finally:
            self.busy_since = None
        t1 = self._clock()
        self._reads += 1
        if t1 - t0 > SLOW_READ_S:
            return t1, reading.energy_j, reading.power_w, True
        return (t0 + t1) / 2, reading.energy_j, reading.power_w, False

    def read_delay_s(self, now: float) -> float:
        """How long to wait before reading this device, so that a phase-locked counter that
        missed a step is not read within the tolerance of the next, where a new value could
        belong to either (`meter.stepclock.StepView.ambiguous_at`): 0 otherwise."""
        steps = self._published.steps
        k = None if steps is None else steps.ambiguous_at(now)
        if steps is None or k is None:
            return 0.0
        return max(steps.step_time(k) + steps.tolerance_s(now) + POLL_S - now, 0.0)

    def observe(self) -> float:
        """Read the device now (unless a read is in progress elsewhere, or a retry is not due)
        and return its estimated cumulative joules. Never raises, never waits on a device call
        in progress (a hung one holds the lock)."""
        if not self._lock.acquire(blocking=False):
            return self._energy_j
        try:
            self._poll()
            return self._energy_j
        finally:
            self._lock.release()

    def _poll(self) -> tuple[float, float] | None:
        """Read and account one observation; (read time, raw counter value), or None when
        nothing was read (a retry not due yet, a failed or rejected read: each is counted).
        Caller holds the lock."""
        retry_at = self._retry_at
        if retry_at is not None and self._clock() < retry_at:
            return None
        try:
            t, energy, power, slow = self._read_raw()
        except BadReading as exc:
            self._reject(exc)
            return None
        except MethodChanged as exc:
            self._fall_back(exc)
            return None
        except Exception as exc:
            self._fail(exc)
            return None
        if self._failures or self._unreadable_since is not None:
            self._recover(t)
        self._update(t, energy, power, slow)
        return t, float(energy or 0.0)

    def _update(
        self, t: float, energy: float | None, power: float | None, slow: bool = False
    ) -> float:
        before = self._energy_j
        self._integrate(t, energy, power, slow)
        rate = self._rate
        if rate is not None and self._energy_j > before:
            # Price this increment at the intensity in force now: CO2e per sample interval.
            loc, market = rate.rates
            delta = self._energy_j - before
            self._co2e_g += delta * loc
            if market is not None:
                self._co2e_market_g += delta * market
        self._publish()
        return self._energy_j

    def _publish(self) -> None:
        model = self._model
        with self._publish_lock:  # the watchdog publishes a stall from its own thread
            self._published = Snapshot(
                self._t_last,
                self._energy_j,
                self._power_w,
                self._co2e_g,
                self._co2e_market_g,
                self._error,
                self._read_errors,
                model is not None and not model.continuous,
                None if model is None else model.view,
                self._rejected,
                self._unreadable_since,
                self._unreadable_s,
                self._fallback_at,
                self._last_error,
            )
        if self._on_publish is not None:
            self._on_publish()

    def _integrate(
        self, t: float, energy: float | None, power: float | None, slow: bool = False
    ) -> None:
        prev_t = self._t_last
        if prev_t is not None and t < prev_t:
            t = prev_t  # a slow read timed at its end may end before a later one began
        if self.info.counter:
            value = float(energy or 0.0)
            model = self._model
            if model is not None and not slow:
                # (A slow read's value was published somewhere inside the call: it says
                # nothing precise about when the counter steps.)
                model.observe(t, value)
                estimate = model.energy_at(t, value)
            else:
                estimate = value
            if prev_t is not None and t > prev_t:
                if power is not None:
                    self._power_w = power
                elif model is not None and model.locked:
                    self._power_w = model.rate_w
                elif value != self._raw_last:
                    # Unlocked counter: power between two successive changes of the raw value
                    # (a delta between arbitrary reads of a stepping counter aliases badly).
                    if self._change is not None and t > self._change[0]:
                        self._power_w = (value - self._change[1]) / (t - self._change[0])
                    self._change = (t, value)
            self._raw_last = value
            self._energy_j = max(estimate, self._energy_j)
        else:
            p = max(float(power or 0.0), 0.0)
            if prev_t is not None and t > prev_t:
                self._energy_j += (self._power_w + p) / 2 * (t - prev_t)
            self._power_w = p
        self._t_last = t

    def _fail(self, exc: BaseException) -> None:
        """A failed read: retried with backoff; marked failed only when it persists."""
        t = self._clock()
        self._read_errors += 1
        self._failures += 1
        message = f"{type(exc).__name__}: {exc}"
        self._last_error = message
        if self._unreadable_since is None:
            # From the last good read: the device may have stopped answering anywhere since,
            # so nothing after it is carried on (a gap may be overstated, never overcounted).
            self._unreadable_since = self._t_last if self._t_last is not None else t
        key = self.info.key
        if self._error is None:
            streak = t - self._unreadable_since
            if self._failures >= FAIL_AFTER_READS and streak >= FAIL_AFTER_S:
                self._error = message
                log.warning(
                    "meter: %s marked failed after %d failed reads over %.0f s (%s): its "
                    "energy so far is kept, windows report the time since as missing, and it "
                    "is probed every %.0f s in case it comes back.",
                    key,
                    self._failures,
                    streak,
                    message,
                    PROBE_EVERY_S,
                )
            elif self._failures == 1:
                log.warning(
                    "meter: %s read failed (%s); retrying with backoff (marked failed only "
                    "after %d failures over %.0f s).",
                    key,
                    message,
                    FAIL_AFTER_READS,
                    FAIL_AFTER_S,
                )
        if self._error is not None:
            delay = PROBE_EVERY_S
        else:
            delay = min(RETRY_FIRST_S * 2.0 ** (self._failures - 1), RETRY_MAX_S)
        self._retry_at = t + delay
        self._publish()

    def _recover(self, t: float) -> None:
        """A read succeeded after failed reads or a stall: close the gap."""
        since = self._unreadable_since
        gap = max(t - since, 0.0) if since is not None else 0.0
        if self._failures or self._error is not None:
            log.warning(
                "meter: %s readable again after %.1f s (%d failed reads)%s.",
                self.info.key,
                gap,
                self._failures,
                ": its counter covers the gap"
                if self.info.counter
                else ": its energy over the gap is interpolated between the readings around it",
            )
        self._unreadable_s += gap
        self._unreadable_since = None
        self._failures = 0
        self._retry_at = None
        self._error = self._last_error = None

    def _reject(self, exc: BadReading) -> None:
        """A read whose value cannot be true: ignored (no energy), counted, published."""
        self._rejected += 1
        if self._rejected <= 3 or self._rejected % 100 == 0:
            log.warning("meter: %s (%d such reads so far)", exc, self._rejected)
        self._publish()

    def _fall_back(self, exc: MethodChanged) -> None:
        """The device now measures another way (energy counter lost: power readings)."""
        self.info = self.device.info
        self._model = None
        self._change = None
        self._fallback_at = self._clock()
        self._boundary_reads = _reads_at_boundaries(self.info)
        log.warning("meter: %s: %s", self.info.key, exc)
        self._publish()

    def mark_stalled(self, since: float) -> bool:
        """The device call that began at ``since`` has not returned (the watchdog's call, from
        its own thread): the device is unreadable from then on, until a read succeeds. False
        when that call has returned meanwhile."""
        with self._publish_lock:
            if self.busy_since != since or self._unreadable_since is not None:
                return False
            self._unreadable_since = since
            self._last_error = f"device call hung (no answer for over {STALL_S:g} s)"
        log.warning(
            "meter: %s: a device call has not returned for %.0f s (a hung driver?); windows "
            "use its last figure, flagged, and the other devices go on.",
            self.info.key,
            STALL_S,
        )
        self._publish()
        return True

    # -- window boundaries -------------------------------------------------------------------

    def raw_for_retro(self, read: bool) -> float | None:
        """The raw counter value a boundary read just saw when the phase lock did not exist
        yet, for the window to redo the interpolation at exit (`retro_energy`); else None."""
        locked = self._published.steps is not None
        if read and self._boundary_reads and self._model is not None and not locked:
            return self._raw_last
        return None

    def retro_energy(self, t: float, raw: float | None) -> float | None:
        """Better joules for an earlier boundary at ``t``, now that more is known: between the
        counter values published around it (so a load change just before ``t`` is not
        extrapolated across it), else, for a read made before the lock existed (``raw``), the
        lock's interpolation from that read. None when neither applies."""
        model = self._model
        if model is None or self._published.steps is None:
            return None
        better = model.interpolate(t)  # lock-free: a window's exit never waits on the sampler
        if better is None and raw is not None:
            with self._lock:
                better = model.energy_then(t, raw)
        return better

    def energy_now(self, t: float, read: bool) -> float:
        """Cumulative joules at time ``t`` (taken just before this call): a fresh read for
        devices read at boundaries when ``read``, else the snapshot extrapolated to ``t``.
        Either way the figure is moved to ``t`` with the current power, so a read that waited
        for the lock (a busy machine, many threads) is not credited with the wait. Not clamped
        to be monotonic across callers; `Group` and windows clamp their deltas."""
        snap = self._published
        if read and self._boundary_reads and snap.unreadable_since is None:
            steps = snap.steps
            if steps is not None and t < steps.quiet_until:  # (`StepView.unchanged_at`, inlined)
                # The phase lock says the counter cannot have published a new value since the
                # value last seen: a read would return it again. Skip the device call (and the
                # lock) and interpolate from it.
                e = steps.energy_at(t)
                return e if e > snap.energy_j else snap.energy_j
            if steps is not None and steps.ambiguous_at(t) is not None:
                # So close to a step, two steps after the last value seen, that a new value
                # could not be placed: skip the device call and carry the latest estimate
                # forward with its power.
                return max(snap.energy_at(t), snap.energy_j)
            if self._lock.acquire(timeout=BOUNDARY_WAIT_S):
                try:
                    polled = self._poll()
                    if polled is None:
                        return self._energy_j
                    t_read = polled[0]
                    return self._energy_j - self._power_w * min(max(t_read - t, 0.0), 1.0)
                finally:
                    self._lock.release()
            # A device call in progress did not return in time (a busy sampler, or a hung
            # driver): this boundary takes the published figure; `late_at` flags it.
            self.late_at = t
            snap = self._published
        # Lock-free: a window with read_devices=False (the ASGI middleware) must not wait for
        # the sampler's device call in progress.
        return snap.energy_at(t)

    # -- phase lock (called by the sampler thread only) --------------------------------------

    def needs_calibration(self) -> bool:
        model = self._model
        return (
            model is not None
            and not model.locked
            and not model.continuous
            and self._unreadable_since is None
        )

    def calibrate_start(self) -> None:
        self._calibration = _Calibration()

    def calibrate_poll(self) -> bool:
        """One fast poll of a calibration; True once enough was seen (or the device failed)."""
        cal = self._calibration
        if cal is None:
            return True
        if not self._lock.acquire(blocking=False):
            return True  # a call in progress elsewhere (hung?): calibrate later
        try:
            polled = self._poll()
        finally:
            self._lock.release()
        if polled is None:
            return True
        t, v = polled
        if cal.last is not None and v != cal.last[1]:
            mid = (cal.last[0] + t) / 2
            if cal.times:
                cal.gaps.append(mid - cal.times[-1])
            cal.times.append(mid)
            cal.values.append(v)
        cal.last = (t, v)
        gaps = cal.gaps
        if len(gaps) >= 5 and sorted(gaps)[len(gaps) // 2] < CONTINUOUS_BELOW_S:
            return True
        return len(cal.times) >= 3 and (len(gaps) >= 5 or gaps[-1] >= CONTINUOUS_BELOW_S)

    def calibrate_finish(self) -> None:
        cal, self._calibration = self._calibration, None
        model = self._model
        if model is None or cal is None or not self._lock.acquire(blocking=False):
            return
        try:
            model.calibrate(cal.times[-3:], cal.values[-3:], cal.gaps)
            self._publish()
        finally:
            self._lock.release()
        log.debug("meter: %s counter %s", self.info.key, model.state)

    def capture_due(self, now: float, every_s: float) -> float | None:
        """The predicted time of the next step to capture, if a capture is due."""
        model = self._model
        if model is None or not model.locked or self._unreadable_since is not None:
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
        model = self._model
        if model is None or not model.locked:
            return
        now = self._clock()
        k, predicted = self._next_capturable(model, now)
        tol = model.tolerance_s(predicted)
        start = predicted - tol - POLL_S
        if start > now and wait(start - now):
            return
        deadline = predicted + tol + 2 * POLL_S
        if not self._lock.acquire(blocking=False):
            return  # a call in progress elsewhere (hung?): capture later
        try:
            polled = self._poll()
        finally:
            self._lock.release()
        if polled is None:
            return
        t_prev, v_prev = polled
        # A change seen between two close reads brackets step k whenever the burst started:
        # a burst that woke too late would see no change before its deadline. But a burst that
        # woke late, or was descheduled between reads, proves nothing by seeing *no* change,
        # so only a continuous, timely burst counts a miss.
        continuous = t_prev <= predicted - tol
        while True:
            if not self._lock.acquire(blocking=False):
                return
            with _Held(self._lock):
                polled = self._poll()
                if polled is None:
                    return
                t, v = polled
                narrow = t - t_prev <= MAX_BRACKET_S
                continuous = continuous and narrow
                if v != v_prev:
                    if narrow:
                        model.capture(k, t_prev, t, v)
                        self._missed_captures = 0
                        self._publish()
                    else:
                        model.last_capture_s = t  # too wide to refine anything; retry later
                    return
            if t > deadline:
                if not self._lock.acquire(blocking=False):
                    return
                with _Held(self._lock):
                    model.last_capture_s = t
                    if continuous and model.rate_w > 0:
                        # The counter did not step where predicted although power flows:
                        # once may be driver jitter, twice in a row means the lock is wrong.
                        self._missed_captures += 1
                        if self._missed_captures >= 2:
                            model.unlock()
                            self._missed_captures = 0
                            self._publish()
                return
            t_prev, v_prev = t, v
            sleep(POLL_S)  # a burst of a few ms at most: sleep is cheaper than Event.wait


class _Held:
    """Releases a lock already acquired (``acquire(blocking=False)``) at the end of a block."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class CoarseBlock(NamedTuple):
    """Per-device peak power over a block of samples (the long, coarse history)."""

    start: float
    end: float
    peak_w: tuple[float, ...]


#: ``snapshot_of(track)`` is ``track.snapshot()`` without a Python call (C ``attrgetter``).
snapshot_of: Callable[[Track], Snapshot] = operator.attrgetter("_published")


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
        self._published_lock = threading.Lock()
        #: Every track's latest snapshot, in ledger order, replaced whole after each
        #: publication: a window boundary that reads no device takes this and the clock.
        self.published: tuple[Snapshot, ...] = tuple(map(snapshot_of, self.tracks))
        for track in self.tracks:
            track._on_publish = self._republish
        self.keys = tuple(t.info.key for t in self.tracks)
        #: Whether any device is read at window boundaries (else a boundary only notes the
        #: time and the snapshots).
        self.reads_at_boundaries = any(t.reads_at_boundaries for t in self.tracks)
        self.samples: deque[Sample] = deque(maxlen=history)
        # Coarse history: per-device peak power per block of samples, so a window longer than
        # the fine history still gets a peak. Bounded as well.
        self.coarse: deque[CoarseBlock] = deque(maxlen=history)
        self._coarse_block: list[Sample] = []
        self.coarse_every = 100

    def snapshots(self) -> tuple[Snapshot, ...]:
        """Every track's published state (lock-free: `published`)."""
        return self.published

    def _republish(self) -> None:
        with self._published_lock:  # tracks publish from several threads
            self.published = tuple(map(snapshot_of, self.tracks))

    def energies_at(self, read: bool) -> tuple[float, tuple[float, ...]]:
        """Time now and per-device cumulative joules then (`Track.energy_now`)."""
        t = self.clock()
        return t, tuple(track.energy_now(t, read) for track in self.tracks)

    def carbon_states(self) -> tuple[CarbonState, ...]:
        """Every track's cumulative joules and CO2e (lock-free)."""
        return tuple(track.snapshot().carbon for track in self.tracks)

    def record(self, t: float, wall: float) -> Sample:
        snaps = self.snapshots()
        sample = Sample(
            t=t,
            wall=wall,
            energy_j=tuple(s.energy_j for s in snaps),
            power_w=tuple(s.power_w for s in snaps),
        )
        self.samples.append(sample)
        block = self._coarse_block
        block.append(sample)
        if len(block) >= self.coarse_every:
            peaks = tuple(max(s.power_w[i] for s in block) for i in range(len(self.tracks)))
            self.coarse.append(CoarseBlock(block[0].t, block[-1].t, peaks))
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

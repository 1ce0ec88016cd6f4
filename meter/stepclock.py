"""Phase lock on a slowly updating energy counter, so boundary reads can be interpolated.

Hardware energy counters do not move continuously. NVML's total-energy counter is published by
the driver only every ~20-100 ms depending on the board (Yang et al., "Part-time Power
Measurements: nvidia-smi's Lack of Attention", 2023, saw 100 ms on A100/H100), so a raw read at
a window boundary is stale by up to one update period: a 0.5 s window read raw can be off by
20% or read 0 J when it is shorter than a period.

`StepModel` learns when the counter steps. It first *calibrates* by polling fast until it has
seen three steps (period T and phase), then keeps the lock by *capturing* one step precisely
every so often (a short burst of polls around the predicted step time), refining T over an
ever longer baseline. With the lock, a read value ``v`` published at step time ``s_k`` gives
the energy at read time ``t`` as ``v + rate * (t - s_k)``, where ``rate`` is the power over the
last published period. Counters that move on nearly every poll (RAPL, ~1 ms) are marked
``continuous`` and used raw.

All times are seconds on the meter's monotonic clock. Not thread-safe by itself: the ledger
calls it under the device's lock, and publishes its `view` (an immutable `StepView`) for readers
that must not take that lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

#: Polling gap used while calibrating or capturing a step (seconds).
POLL_S = 0.0003
#: Counters whose median step gap is below this are treated as continuous (RAPL: ~1 ms).
CONTINUOUS_BELOW_S = 0.004
#: Three step gaps must agree within this fraction for a periodic model.
REGULARITY = 0.2
#: Tolerance added around a predicted step time (scheduling jitter of the driver).
BASE_TOLERANCE_S = 0.002
#: Published (step, value) pairs kept for interpolating into the past (6 s at 100 ms).
HISTORY_STEPS = 64
#: A past time is interpolated only between published values at most this many steps apart.
MAX_INTERPOLATION_STEPS = 3


class StepView(NamedTuple):
    """A locked model's prediction, frozen: what a reader needs without the device's lock.
    Build it with `StepView.of`, which also precomputes what window boundaries ask for."""

    anchor_s: float
    period_s: float
    period_err_s: float
    k_last: int
    v_last: float
    rate_w: float
    #: When `v_last` was published.
    s_last: float
    #: Until when no new value can have been published (the next step, less its tolerance).
    quiet_until: float

    @classmethod
    def of(
        cls,
        anchor_s: float,
        period_s: float,
        period_err_s: float,
        k_last: int,
        v_last: float,
        rate_w: float,
    ) -> StepView:
        s_last = anchor_s + k_last * period_s
        s_next = s_last + period_s
        k_next = (s_next - anchor_s) / period_s if period_s else 0.0
        tol = BASE_TOLERANCE_S + abs(k_next) * period_err_s
        return cls(anchor_s, period_s, period_err_s, k_last, v_last, rate_w, s_last, s_next - tol)

    def step_time(self, k: int) -> float:
        return self.anchor_s + k * self.period_s

    def tolerance_s(self, t: float) -> float:
        """How far off a predicted step time may be at time ``t``."""
        k = (t - self.anchor_s) / self.period_s if self.period_s else 0.0
        return BASE_TOLERANCE_S + abs(k) * self.period_err_s

    def unchanged_at(self, t: float) -> bool:
        """True when the counter cannot have published a new value by ``t``: a read then would
        return `v_last` again."""
        return t < self.quiet_until

    def ambiguous_at(self, t: float) -> int | None:
        """The predicted step ``t`` is within the tolerance of, when a new value read then could
        be that step's or the one before's, both unseen (two steps or more since the last value
        seen): a read there is better not made. None otherwise."""
        k = round((t - self.anchor_s) / self.period_s)
        if k - 1 > self.k_last and abs(t - self.step_time(k)) <= self.tolerance_s(t):
            return k
        return None

    def energy_at(self, t: float) -> float:
        """Energy at ``t`` from the latest value: ``v_last`` plus the last period's power for
        the time since it was published, at most one and a half periods (if the counter
        stopped stepping, the model is wrong, and the next observation unlocks it)."""
        since = t - self.s_last
        if since < 0.0:
            since = 0.0
        elif since > 1.5 * self.period_s:
            since = 1.5 * self.period_s
        return self.v_last + self.rate_w * since


class StepModel:
    """What is known about when one counter publishes new values."""

    __slots__ = (
        "anchor_s",
        "captures",
        "continuous",
        "failures",
        "history",
        "irregular",
        "k_last",
        "k_prev",
        "last_capture_s",
        "locked",
        "period_err_s",
        "period_s",
        "v_last",
        "v_prev",
        "view",
    )

    def __init__(self) -> None:
        self.locked = False
        self.continuous = False
        self.irregular = False
        self.failures = 0
        self.period_s = 0.0
        self.period_err_s = 0.0
        self.anchor_s = 0.0  # time of step k = 0
        self.k_last = 0  # step index of the latest published value seen
        self.v_last = 0.0
        self.k_prev = 0
        self.v_prev = 0.0
        self.last_capture_s = -math.inf
        self.captures = 0
        #: Recent published values by step index: (k, value), oldest first.
        self.history: deque[tuple[int, float]] = deque(maxlen=HISTORY_STEPS)
        #: The prediction as of the latest change, or None while not locked.
        self.view: StepView | None = None

    def _refresh(self) -> None:
        """Freeze the prediction into `view` (call after every change of the lock)."""
        if not self.locked:
            self.view = None
            return
        self.view = StepView.of(
            self.anchor_s, self.period_s, self.period_err_s, self.k_last, self.v_last, self.rate_w
        )

    # -- calibration -------------------------------------------------------------------------

    def calibrate(
        self, step_times: list[float], step_values: list[float], gaps: list[float]
    ) -> None:
        """Set up the model from a fast poll: the midpoints of the brackets of three steps,
        the values published at them, and every gap seen between successive changes."""
        if gaps and sorted(gaps)[len(gaps) // 2] < CONTINUOUS_BELOW_S:
            self.continuous = True
            self.locked = False
            return
        if len(step_times) < 3:
            return
        g1 = step_times[1] - step_times[0]
        g2 = step_times[2] - step_times[1]
        if g1 <= 0 or abs(g1 - g2) > REGULARITY * max(g1, g2):
            self.irregular = True
            return
        self.period_s = (step_times[2] - step_times[0]) / 2
        self.period_err_s = POLL_S
        self.anchor_s = step_times[0]
        self.k_prev, self.v_prev = 1, step_values[1]
        self.k_last, self.v_last = 2, step_values[2]
        self.last_capture_s = step_times[2]
        self.captures = 0
        self.locked = True
        self.irregular = False
        self.history.clear()
        self.history.extend((k, step_values[k]) for k in range(3))
        self._refresh()

    def unlock(self) -> None:
        """Forget the lock (the counter did not step where predicted); recalibrate later."""
        self.locked = False
        self.failures += 1
        self.view = None

    # -- prediction --------------------------------------------------------------------------

    def step_time(self, k: int) -> float:
        return self.anchor_s + k * self.period_s

    def tolerance_s(self, t: float) -> float:
        """How far off a predicted step time may be at time ``t``."""
        k = (t - self.anchor_s) / self.period_s if self.period_s else 0.0
        return BASE_TOLERANCE_S + abs(k) * self.period_err_s

    def next_step_after(self, t: float) -> tuple[int, float]:
        k = math.floor((t - self.anchor_s) / self.period_s) + 1
        return k, self.step_time(k)

    @property
    def rate_w(self) -> float:
        """Power over the latest published period(s), from the counter itself."""
        dk = self.k_last - self.k_prev
        if dk <= 0 or self.period_s <= 0:
            return 0.0
        return (self.v_last - self.v_prev) / (dk * self.period_s)

    # -- observation -------------------------------------------------------------------------

    def observe(self, t: float, v: float) -> None:
        """Feed one read: value ``v`` of the counter seen at time ``t``. Reads arrive in time
        order (the ledger holds the device lock around read and observe)."""
        if not self.locked:
            return
        if v > self.v_last:
            # A new value: the step it was published at is the last one predicted by ``t``,
            # unless ``t`` is within the tolerance of a predicted step: then it may be that
            # step's value published a little early, or the one before it published a little
            # late. With one step since the last value seen, only one of them is new. With
            # more, the model is left as it is (`energy_at` then counts at least the raw value)
            # and a later read, away from a step, places it.
            k_new = math.floor((t - self.anchor_s) / self.period_s)
            tol = self.tolerance_s(t)
            if self.step_time(k_new + 1) - t <= tol:
                k_new = self._which(k_new, k_new + 1)
            elif t - self.step_time(k_new) <= tol:
                k_new = self._which(k_new - 1, k_new)
            if k_new < 0:
                return  # ambiguous: decide on a later read
            if k_new <= self.k_last:
                # A new value where the model says no step can have happened: lock lost.
                self.unlock()
                return
            self.k_prev, self.v_prev = self.k_last, self.v_last
            self.k_last, self.v_last = k_new, v
            self.history.append((k_new, v))
            self._refresh()
        elif v == self.v_last:
            # No new value. If two whole periods passed, the counter is stepping by zero
            # (an idle device at 0 W), so the power really is zero now.
            k_now = math.floor((t - self.tolerance_s(t) - self.anchor_s) / self.period_s)
            if k_now >= self.k_last + 2:
                self.k_prev, self.v_prev = k_now - 1, v
                self.k_last = k_now
                self._refresh()
        else:
            self.unlock()  # went backwards: device reset

    def _which(self, k_early: int, k_late: int) -> int:
        """The step a new value belongs to, between two candidates around a predicted step
        time; -1 when both are new and it cannot be told. (The energy added does not tell
        either: on a load that changed by a third within a period, the wrong step matches the
        last period's power better, and a wrong guess moves every later interpolation by a
        whole period.)"""
        return k_late if k_early <= self.k_last else -1

    def energy_at(self, t: float, v: float) -> float:
        """Energy at read time ``t`` given the value ``v`` read then (already observed). A new
        value the model could not place (see `observe`) counts as at least the extrapolation
        from the last placed one."""
        view = self.view
        if view is None:
            return v
        if v != view.v_last:
            return max(v, view.energy_at(t))
        return view.energy_at(t)

    def energy_then(self, t: float, v: float) -> float:
        """Energy at an earlier read time ``t`` that saw value ``v`` before the model was locked:
        the same interpolation, with the step index worked out from the lock found since."""
        if not self.locked:
            return v
        k = math.floor((t - self.anchor_s) / self.period_s)
        since = min(max(t - self.step_time(k), 0.0), self.period_s)
        return v + self.rate_w * since

    def interpolate(self, t: float) -> float | None:
        """Energy at a past time ``t`` between the published values around it, once the step
        after ``t`` has been seen: exact for a constant power within the period, where
        `energy_at` could only extrapolate the previous period's power. None when the history
        does not bracket ``t`` closely enough (or the model is not locked). Safe without the
        device's lock: it reads the history from its newest end by index, and a step appended
        meanwhile only adds a newer candidate."""
        view = self.view
        history = self.history
        if view is None:
            return None
        k = math.floor((t - view.anchor_s) / view.period_s)
        after: tuple[int, float] | None = None
        before: tuple[int, float] | None = None
        try:
            for j in range(1, len(history) + 1):
                step = history[-j]
                if step[0] > k:
                    after = step
                else:
                    before = step
                    break
        except IndexError:  # the history was cleared meanwhile (a new lock)
            return None
        if before is None or after is None or after[0] - before[0] > MAX_INTERPOLATION_STEPS:
            return None
        (ka, va), (kb, vb) = before, after
        sa, sb = view.step_time(ka), view.step_time(kb)
        return va + (vb - va) * min(max((t - sa) / (sb - sa), 0.0), 1.0)

    def capture(self, k: int, bracket_lo: float, bracket_hi: float, value: float) -> None:
        """Refine the lock with a precisely bracketed step ``k`` seen in (lo, hi]."""
        mid = (bracket_lo + bracket_hi) / 2
        if k <= 0:
            return
        predicted = self.step_time(k)
        if abs(mid - predicted) > self.tolerance_s(mid) + (bracket_hi - bracket_lo):
            self.unlock()
            return
        # Longer baseline -> finer period. Keep the anchor (step 0) fixed.
        self.period_s = (mid - self.anchor_s) / k
        self.period_err_s = max((bracket_hi - bracket_lo) / k, 1e-7)
        self.last_capture_s = mid
        self.captures += 1
        if value > self.v_last and k > self.k_last:
            self.k_prev, self.v_prev = self.k_last, self.v_last
            self.k_last, self.v_last = k, value
            self.history.append((k, value))
        self._refresh()

    @property
    def state(self) -> str:
        if self.continuous:
            return "continuous"
        if self.locked:
            return f"locked (period {self.period_s * 1000:.1f} ms)"
        if self.irregular:
            return "irregular updates"
        return "calibrating"

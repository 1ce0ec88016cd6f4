"""Validation of cumulative energy counters: a counter that goes back is never energy.

Hardware energy counters (NVML's ``nvmlDeviceGetTotalEnergyConsumption`` in mJ, RAPL's
``energy_uj``) only ever count up, except when they wrap (RAPL, at ``max_energy_range_uj``),
restart (a driver reload or a GPU reset sets NVML's counter back to 0), or misread. Taking
every decrease as a wrap or a restart invents energy: one NVML read 1 J low, taken as a
restart, adds the whole raw counter (about 1,000,000 J on a board up for a few days); a RAPL
counter that drops from 100 J to 0 without wrapping, taken as a wrap, adds 262,043 J.

The model: between two accepted reads ``elapsed`` seconds apart, the device cannot have used
more than its highest plausible power (a GPU's power limit, a RAPL zone's constraints) times
`MARGIN`, over ``elapsed + SLACK_S``. `CounterValidator` sorts each new raw value against the
last accepted one:

* **increase**: a rise within that bound; counted.
* **wrap** (only with a wrap modulus): a fall whose wrapped increment ``new + range - old`` is
  within the bound; counted.
* **reset**: a fall to near zero, i.e. the new raw value is itself within the bound: the
  counter restarted since the last read. Counted as the new raw value (what accrued since the
  restart), never as the old one; the new value is the new base.
* **rejected**: any other fall, a rise beyond the bound, a negative or non-finite value. Not
  energy: counted in `CounterValidator.rejected`; the device raises `meter.errors.BadReading`.
  The next read is measured from the last accepted value and time, so one bad read costs
  nothing.
* **rebase**: a counter that moved for good (it jumped and counts on from the new level, or
  stepped back and stays there). After `REBASE_AFTER` consecutive rejected reads that are
  consistent among themselves (each a plausible increase, or wrap, from the one before), the
  newest becomes the base. The jump itself is not counted: the energy between the last
  accepted read and the first of those reads is estimated as the last accepted rate
  (`CounterValidator.rate_w`) times that time, and recorded (`CounterValidator.estimated_j`,
  `Verdict.estimated_j`); the energy among those reads is the counter's own.

What the validator cannot do is reject a change that is physically possible: a bad value
within the bound of the last accepted one is accepted. The bound is a wide one on purpose, so
that no true reading is ever refused.

    >>> v = CounterValidator("gpu:0", 1_000_000.0, 0.0, max_power_w=700.0)
    >>> v.update(1_000_030.0, 0.1).kind, v.energy_j
    ('increase', 30.0)
    >>> v.update(1_000_029.0, 0.2).kind, v.energy_j  # stepped back 1 J: a bad read
    ('rejected', 30.0)
    >>> v.update(1_000_090.0, 0.3).kind, v.energy_j  # on from the last accepted value
    ('increase', 90.0)
    >>> v.update(5.0, 0.4).kind, v.energy_j  # restarted near zero: 5 J since the restart
    ('reset', 95.0)
"""

from __future__ import annotations

import math
from typing import Final, Literal, NamedTuple

from meter.errors import BadReading

__all__ = [
    "MARGIN",
    "RATE_WINDOW_S",
    "REBASE_AFTER",
    "SLACK_S",
    "CounterValidator",
    "Verdict",
    "VerdictKind",
]

#: How far above its highest plausible power (a power limit, a RAPL constraint) a device may
#: seem to run between two reads. Power limits are averages over a control window: a GPU can
#: exceed its limit for tens of milliseconds, a CPU runs above its long-term limit (PL1) up to
#: its short-term one (PL2, about 1.25 x) for seconds; 2 covers both with room to spare.
MARGIN: Final = 2.0
#: Seconds added to the elapsed time before the bound is applied. Counters publish in steps
#: (NVML's about every 100 ms, RAPL's about every 1 ms), so a read just after a step sees a
#: whole period's energy even when the last read was a microsecond ago. With `MARGIN` 2, 0.5 s
#: lets a counter that publishes as rarely as once a second step by its full-limit energy.
SLACK_S: Final = 0.5
#: Consecutive rejected reads, consistent among themselves, after which the counter is taken to
#: have moved for good and is rebased. At 10 Hz this is 0.3 s; a glitch shorter than this is
#: ignored, one longer looks like a move (and is rebased twice: there and back).
REBASE_AFTER: Final = 3
#: The span over which the accepted rate (`CounterValidator.rate_w`, used to estimate the gap
#: of a rebase) is measured: long enough to average over NVML's 100 ms publication steps.
RATE_WINDOW_S: Final = 1.0

#: What one update of a `CounterValidator` concluded.
VerdictKind = Literal["open", "increase", "wrap", "reset", "rebase", "rejected"]


class Verdict(NamedTuple):
    """What `CounterValidator.update` concluded about one raw value.

    ``raw`` is the value given (counter units) and ``t`` its read time; ``added_j`` the joules
    this update added (0 when rejected), of which ``estimated_j`` is an estimate (a rebase's
    gap); ``energy_j`` the validated joules since open after it. ``message`` says what was
    seen, for a rejection, a reset or a rebase ("" otherwise).
    A NamedTuple: one is made per counter read, so it is cheap to build.
    """

    kind: VerdictKind
    raw: float
    t: float
    added_j: float
    energy_j: float
    estimated_j: float = 0.0
    message: str = ""

    @property
    def accepted(self) -> bool:
        """Whether the value was taken (every kind but ``rejected``)."""
        return self.kind != "rejected"


def _j(value: float) -> str:
    """Joules for a message, to the millijoule: 999999.0, 1000000.5."""
    return repr(round(float(value), 3))


class CounterValidator:
    """Validated joules since open from successive raw values of a cumulative energy counter.

    ``name`` names the device in messages (``gpu:0``); ``raw`` and ``t`` are the value read at
    open and its read time (seconds of a monotonic clock). ``max_power_w`` is the highest
    power the device can plausibly draw (the bound is ``max_power_w x margin x (elapsed +
    slack_s)``). ``wrap`` is the counter's modulus, in counter units, where it wraps (RAPL's
    ``max_energy_range_uj``); None for a counter that does not wrap (NVML's u64). Raw values
    are in counter units, ``units_per_j`` of them to a joule (1000 for NVML's mJ, 1e6 for
    RAPL's uJ, 1 for joules); integer units are added exactly.

    Not thread-safe: the device calls it under its own lock, one update per read.

    Diagnostics: `rejected`, `resets`, `wraps`, `rebases` count what was seen; `estimated_j`
    is the energy estimated over rebases (`estimates` of them); `last` is the last `Verdict`.
    """

    def __init__(
        self,
        name: str,
        raw: float,
        t: float,
        *,
        max_power_w: float,
        wrap: float | None = None,
        units_per_j: float = 1.0,
        margin: float = MARGIN,
        slack_s: float = SLACK_S,
        rebase_after: int = REBASE_AFTER,
    ) -> None:
        if not (math.isfinite(max_power_w) and max_power_w > 0):
            raise ValueError(f"{name}: max_power_w must be a finite number of watts > 0")
        if wrap is not None and not (math.isfinite(wrap) and wrap > 0):
            raise ValueError(f"{name}: wrap must be a finite counter range > 0, or None")
        if not (math.isfinite(units_per_j) and units_per_j > 0):
            raise ValueError(f"{name}: units_per_j must be > 0 (1000 for mJ, 1e6 for uJ)")
        if not (math.isfinite(margin) and margin >= 1 and math.isfinite(slack_s) and slack_s >= 0):
            raise ValueError(f"{name}: margin must be >= 1 and slack_s >= 0 seconds")
        if rebase_after < 2:
            raise ValueError(
                f"{name}: rebase_after must be >= 2 reads (1 would take any bad read as a move)"
            )
        if not math.isfinite(raw) or raw < 0:
            raise ValueError(f"{name}: the counter's value at open must be >= 0, got {raw!r}")
        self.name = name
        self.max_power_w = float(max_power_w)
        self.wrap = wrap
        self.units_per_j = units_per_j
        self.margin = margin
        self.slack_s = slack_s
        self.rebase_after = rebase_after
        #: Reads rejected (never turned into energy), restarts near zero, wraps, and rebases.
        self.rejected = 0
        self.resets = 0
        self.wraps = 0
        self.rebases = 0
        #: Rebases whose gap was estimated, and the joules so estimated in all.
        self.estimates = 0
        self.estimated_j = 0.0
        # Units counted in closed segments; the open segment runs from _base to _last_raw.
        self._done: float = 0
        self._base = raw
        self._last_raw = raw
        self._last_t = t
        # Rejected reads consistent among themselves: the first one, and units counted since.
        self._pending: list[tuple[float, float]] = []
        self._pending_units: float = 0
        # The accepted rate over the last RATE_WINDOW_S, from an anchor (time, joules).
        self._anchor_t = t
        self._anchor_j = 0.0
        self._rate_w: float | None = None
        #: The last `Verdict` (``open`` until the first update).
        self.last = Verdict("open", raw, t, 0.0, 0.0)

    def __repr__(self) -> str:
        return (
            f"CounterValidator({self.name!r}, energy_j={self.energy_j!r}, "
            f"rejected={self.rejected}, resets={self.resets}, wraps={self.wraps}, "
            f"rebases={self.rebases})"
        )

    @property
    def energy_j(self) -> float:
        """Validated joules since open."""
        return (self._done + self._last_raw - self._base) / self.units_per_j + self.estimated_j

    @property
    def rate_w(self) -> float:
        """The accepted rate (watts) over the last `RATE_WINDOW_S` (or since open, before one
        has passed), at most ``max_power_w``; 0 before any time has passed."""
        if self._rate_w is not None:
            return self._rate_w
        span = self._last_t - self._anchor_t
        if span <= 0:
            return 0.0
        return min(max((self.energy_j - self._anchor_j) / span, 0.0), self.max_power_w)

    def plausible_j(self, elapsed_s: float) -> float:
        """The most joules the device can plausibly use in ``elapsed_s`` seconds (clamped at 0)."""
        return self.max_power_w * self.margin * (max(elapsed_s, 0.0) + self.slack_s)

    def check(self, raw: float, t: float) -> float:
        """`update`, then the validated joules since open; raises `meter.errors.BadReading`
        (``device`` = ``name``) with the verdict's message when the value is rejected."""
        verdict = self.update(raw, t)
        if verdict.kind == "rejected":
            raise BadReading(verdict.message, device=self.name)
        return verdict.energy_j

    def update(self, raw: float, t: float) -> Verdict:
        """Take the raw value ``raw`` read at time ``t``; returns the `Verdict`."""
        last = self._last_raw
        if last <= raw:
            # The common case, kept short (one per read): a plausible rise.
            step = raw - last
            elapsed = t - self._last_t
            bound = self.max_power_w * self.margin * (max(elapsed, 0.0) + self.slack_s)
            if step <= bound * self.units_per_j:
                return self._accept("increase", raw, t, self.energy_j)
        before_j = self.energy_j
        if not math.isfinite(raw) or raw < 0:
            self._pending = []  # not a counter value: nothing can follow from it
            return self._reject(
                raw, t, f"{self.name} energy counter read {raw!r}, not a cumulative energy"
            )
        elapsed = t - self._last_t
        bound = self.plausible_j(elapsed) * self.units_per_j
        if raw >= last:
            if raw - last <= bound:
                return self._accept("increase", raw, t, before_j)
            why = (
                f"{self.name} energy counter jumped {_j(self._joules(raw - last))} J in "
                f"{max(elapsed, 0.0):.3g} s ({self._pair(last, raw)}), more than "
                f"{self.max_power_w:g} W x {self.margin:g} allows "
                f"({_j(self._joules(bound))} J at most)"
            )
        elif self.wrap is not None and raw + self.wrap - last <= bound:
            self.wraps += 1
            self._done += last - self._base + (raw + self.wrap - last)
            self._base = raw
            return self._accept("wrap", raw, t, before_j)
        elif raw <= bound:
            self.resets += 1
            self._done += last - self._base + raw
            self._base = raw
            message = (
                f"{self.name} energy counter restarted near zero ({self._pair(last, raw)}; a "
                f"driver reload or a device reset): {_j(self._joules(raw))} J counted since the "
                f"restart"
            )
            return self._accept("reset", raw, t, before_j, message=message)
        else:
            how = "wrapping or restarting" if self.wrap is not None else "restarting"
            why = (
                f"{self.name} energy counter stepped back {_j(self._joules(last - raw))} J "
                f"({self._pair(last, raw)}) without {how} near zero"
            )
        return self._rejected_value(raw, t, why, before_j)

    # -- internals -----------------------------------------------------------------------------

    def _joules(self, units: float) -> float:
        return units / self.units_per_j

    def _pair(self, old: float, new: float) -> str:
        return f"{_j(self._joules(old))} -> {_j(self._joules(new))} J"

    def _step_units(self, old: float, old_t: float, new: float, new_t: float) -> float | None:
        """Units from ``old`` to ``new`` if that is a plausible increase or wrap, else None."""
        bound = self.plausible_j(new_t - old_t) * self.units_per_j
        if new >= old:
            return new - old if new - old <= bound else None
        if self.wrap is not None and new + self.wrap - old <= bound:
            return new + self.wrap - old
        return None

    def _rejected_value(self, raw: float, t: float, why: str, before_j: float) -> Verdict:
        """A value that is not plausible from the last accepted one: a bad read, or one more
        sign that the counter moved for good (then perhaps the rebase)."""
        step = None
        if self._pending:
            prev_raw, prev_t = self._pending[-1]
            step = self._step_units(prev_raw, prev_t, raw, t)
        if step is None:
            self._pending = [(raw, t)]
            self._pending_units = 0
        else:
            self._pending.append((raw, t))
            self._pending_units += step
        if len(self._pending) < self.rebase_after:
            return self._reject(raw, t, why)
        return self._rebase(raw, t, before_j)

    def _rebase(self, raw: float, t: float, before_j: float) -> Verdict:
        first_raw, first_t = self._pending[0]
        gap_s = max(first_t - self._last_t, 0.0)
        rate_w = self.rate_w
        estimate_j = rate_w * gap_s
        message = (
            f"{self.name} energy counter moved for good ({self._pair(self._last_raw, first_raw)}, "
            f"then {len(self._pending) - 1} consistent reads): counting on from "
            f"{_j(self._joules(raw))} J; the {gap_s:.3g} s before the move was estimated at "
            f"{rate_w:.4g} W ({_j(estimate_j)} J), the jump itself is not counted"
        )
        self.rebases += 1
        self.estimates += 1
        self.estimated_j += estimate_j
        self._done += self._last_raw - self._base + self._pending_units
        self._base = raw
        self._last_raw = raw
        self._last_t = t
        self._pending = []
        self._pending_units = 0
        energy_j = self.energy_j
        # The rate goes on from here: the jump and the estimate are no measurement of it.
        self._anchor_t, self._anchor_j = t, energy_j
        self.last = Verdict(
            "rebase", raw, t, energy_j - before_j, energy_j, estimate_j, message=message
        )
        return self.last

    def _accept(
        self, kind: VerdictKind, raw: float, t: float, before_j: float, *, message: str = ""
    ) -> Verdict:
        self._last_raw = raw
        self._last_t = max(t, self._last_t)  # a clock that stepped back is clamped
        if self._pending:
            self._pending = []
            self._pending_units = 0
        energy_j = self.energy_j
        span = self._last_t - self._anchor_t
        if span >= RATE_WINDOW_S:
            rate = (energy_j - self._anchor_j) / span
            self._rate_w = min(max(rate, 0.0), self.max_power_w)
            self._anchor_t, self._anchor_j = self._last_t, energy_j
        self.last = Verdict(kind, raw, t, energy_j - before_j, energy_j, message=message)
        return self.last

    def _reject(self, raw: float, t: float, why: str) -> Verdict:
        self.rejected += 1
        energy_j = self.energy_j
        self.last = Verdict("rejected", raw, t, 0.0, energy_j, message=f"{why}: read ignored")
        return self.last

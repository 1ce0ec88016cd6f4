"""`SimulatedGPU`: a board with a programmable true power and a realistic power sensor.

What the board draws (its *truth*) is a constant, a function of time, or a recording's
external-meter trace. What NVML publishes comes from a sensor model (`meter.testing.sensor`:
part-time readings, delay, gain error; the H100-like preset by default) or, for a replayed
recording in *recorded* mode, from the driver readings recorded beside the external meter.
`FakeNVML` (`meter.testing.nvml`) serves it to the real device code.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
import uuid as uuid_module
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import pynvml

from meter.testing.sensor import DEFAULT_SENSOR, Sensor, sensor_for_model, sensor_preset

if TYPE_CHECKING:
    from meter.testing.traces import Recording

__all__ = ["PowerTrace", "SimulatedGPU"]

log = logging.getLogger("meter")

#: Integration step for a power function of time (midpoint rule).
_STEP_S = 1e-3
#: Keep a checkpoint of the integral every this many steps, so that queries into the past
#: (the sensor's windows, `energy_between_j`) integrate at most this many steps.
_CHECKPOINT_STEPS = 100
#: Absorbs float noise before flooring joules to millijoules (300 W x 0.1 s is 30000.000000004 mJ).
_FLOOR_EPS = 1e-6

#: Error kinds for `SimulatedGPU.inject_error` and `FakeNVML(fail_init=...)`: a few friendly
#: names, plus any ``NVML_ERROR_<NAME>`` of pynvml written in lower case ("no_permission").
_ERROR_ALIASES = {"gpu_lost": "GPU_IS_LOST"}

#: What a test can ask `SimulatedGPU.published_energy_between_j` about.
Source = Literal["counter", "instant", "average"]


def _error_code(kind: str) -> int:
    """The NVML return code for an error kind ("gpu_lost", "not_supported", "timeout", ...)."""
    name = _ERROR_ALIASES.get(kind, kind.upper())
    code = getattr(pynvml, f"NVML_ERROR_{name}", None) if name.isidentifier() else None
    if not isinstance(code, int):
        known = sorted(
            {*_ERROR_ALIASES, *(n[11:].lower() for n in dir(pynvml) if n.startswith("NVML_ERROR_"))}
        )
        raise ValueError(
            f"unknown NVML error kind {kind!r}: use one of {', '.join(known)} "
            f"(e.g. 'gpu_lost', 'not_supported', 'unknown', 'timeout')"
        )
    return code


def _check_watts(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of watts >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _InjectedError:
    code: int
    since: float
    calls: frozenset[str] | None


@dataclass(frozen=True)
class _InjectedHang:
    release: threading.Event
    calls: frozenset[str] | None
    timeout_s: float


class PowerTrace(Protocol):
    """A recorded power trace to use as a board's true power (`meter.testing.traces.TracePower`):
    watts and cumulative joules as functions of seconds since the replay started."""

    name: str

    def power_w(self, t: float) -> float: ...

    def cumulative_j(self, t: float) -> float: ...


# -- the truth: what the board draws -----------------------------------------------------------


class _Truth:
    """True power and energy as functions of ``rel``, seconds since the board's creation.
    ``energy(rel)`` is signed: before creation the board drew ``power(0)``. The caller holds
    the GPU's lock."""

    constant: float | None = None

    def power(self, rel: float) -> float:
        raise NotImplementedError

    def energy(self, rel: float) -> float:
        raise NotImplementedError


class _Constant(_Truth):
    def __init__(self, watts: float) -> None:
        self.constant = watts

    def power(self, rel: float) -> float:
        return self.constant  # type: ignore[return-value]

    def energy(self, rel: float) -> float:
        return self.constant * rel  # type: ignore[operator]


class _Function(_Truth):
    """A power function of time, integrated with the midpoint rule on a fixed 1 ms grid from
    creation (cached incrementally, with checkpoints for queries into the past); linear inside
    the last cell, so results do not depend on the order of queries and are monotonic."""

    def __init__(self, fn: Callable[[float], float]) -> None:
        self.fn = fn
        self._steps_done = 0
        self._energy_done_j = 0.0
        self._checkpoints_j = array("d", [0.0])
        self.power(0.0)  # fail now, not at the first NVML call, if the function is broken

    def power(self, rel: float) -> float:
        watts = float(self.fn(rel))
        if not math.isfinite(watts) or watts < 0:
            raise ValueError(
                f"SimulatedGPU power_w({rel!r}) returned {watts!r}: a power function must "
                f"return finite watts >= 0 for every t >= 0"
            )
        return watts

    def energy(self, rel: float) -> float:
        if rel <= 0:
            return self.power(0.0) * rel
        step = int(rel / _STEP_S)
        if step >= self._steps_done:
            base_step, energy = self._steps_done, self._energy_done_j
        else:  # into the past: start from the last checkpoint before it
            base_step = (step // _CHECKPOINT_STEPS) * _CHECKPOINT_STEPS
            energy = self._checkpoints_j[step // _CHECKPOINT_STEPS]
        power = self.power
        checkpoints = self._checkpoints_j
        for k in range(base_step, step):
            energy += _STEP_S * power((k + 0.5) * _STEP_S)
            if (k + 1) % _CHECKPOINT_STEPS == 0 and (k + 1) // _CHECKPOINT_STEPS == len(
                checkpoints
            ):
                checkpoints.append(energy)
        if step > self._steps_done:
            self._steps_done, self._energy_done_j = step, energy
        partial_s = rel - step * _STEP_S
        if partial_s > 0:
            energy += partial_s * power((step + 0.5) * _STEP_S)
        return energy


class _Trace(_Truth):
    def __init__(self, trace: PowerTrace) -> None:
        self.trace = trace

    def power(self, rel: float) -> float:
        return self.trace.power_w(max(rel, 0.0))

    def energy(self, rel: float) -> float:
        if rel <= 0:
            return self.trace.power_w(0.0) * rel
        return self.trace.cumulative_j(rel)


def _truth(power_w: float | Callable[[float], float] | PowerTrace) -> _Truth:
    if hasattr(power_w, "cumulative_j") and hasattr(power_w, "power_w"):
        return _Trace(power_w)  # type: ignore[arg-type]
    if callable(power_w):
        return _Function(power_w)
    return _Constant(_check_watts(float(power_w), "SimulatedGPU power_w"))


# -- what NVML publishes ----------------------------------------------------------------------


class _Readings:
    """What the board publishes, from its truth. Relative times, joules and watts; ``None``
    where the board does not have the reading. The caller holds the GPU's lock."""

    #: A short description for ``meter devices`` notes.
    describe = ""

    def instant_w(self, rel: float) -> float | None:
        raise NotImplementedError

    def average_w(self, rel: float) -> float | None:
        raise NotImplementedError

    def average_field_w(self, rel: float) -> float | None:
        """``NVML_FI_DEV_POWER_AVERAGE`` (nvidia-smi ``power.draw.average``), where it exists."""
        raise NotImplementedError

    def counter_j(self, rel: float) -> float | None:
        """The energy counter's joules since creation, continuous (before the publication
        ticks and the millijoule floor); signed before creation."""
        raise NotImplementedError

    def published_j(self, source: Source, rel0: float, rel1: float) -> float:
        raise NotImplementedError


class _ModelReadings(_Readings):
    """A `Sensor` applied to the truth (see `meter.testing.sensor` for the model)."""

    def __init__(self, sensor: Sensor, truth: _Truth, phase_s: float) -> None:
        if sensor.update_s == 0 and sensor.window_s > 0:
            raise ValueError(
                "a continuous sensor (update_s=0) reads the power at each instant: give "
                "window_s=0, or an update_s for a sensor that publishes periodically"
            )
        self.sensor = sensor
        self.truth = truth
        self.phase_s = phase_s % sensor.update_s if sensor.update_s else 0.0
        self.describe = f"seen through the sensor model {sensor.name!r} (meter.testing.sensor)"
        # Periodic readings: reading k (published at phase + k x update) and the integral of
        # the held readings, extended lazily from the first tick at or before creation.
        self._memo: dict[int, float] = {}
        self._k0 = self._tick(0.0) if sensor.update_s else 0
        self._held = array("d", [0.0])  # integral of held readings from 0 to tick k0 + i
        n = max(1, round(sensor.average_s / sensor.update_s)) if sensor.update_s else 1
        self._n_average = n

    # -- helpers -----------------------------------------------------------------------------

    def _tick(self, rel: float) -> int:
        return math.floor((rel - self.phase_s) / self.sensor.update_s + 1e-9)

    def _time(self, k: int) -> float:
        return self.phase_s + k * self.sensor.update_s

    def _scale(self, watts: float) -> float:
        s = self.sensor
        return max(s.gain * watts + s.offset_w, 0.0)

    def _reading(self, k: int) -> float:
        value = self._memo.get(k)
        if value is not None:
            return value
        s = self.sensor
        truth = self.truth
        if truth.constant is not None:
            value = self._scale(truth.constant)
        else:
            end = self._time(k) - s.delay_s
            if s.window_s > 0:
                mean = (truth.energy(end) - truth.energy(end - s.window_s)) / s.window_s
            else:
                mean = truth.power(max(end, 0.0))
            value = self._scale(mean)
        if len(self._memo) > 64:
            self._memo.clear()
        self._memo[k] = value
        return value

    def _held_integral(self, rel: float) -> float:
        """Integral of the held instantaneous readings from 0 to ``rel``."""
        s = self.sensor
        if s.update_s == 0:
            truth = self.truth
            if truth.constant is not None:
                return self._scale(truth.constant) * rel
            return s.gain * (truth.energy(rel - s.delay_s) - truth.energy(-s.delay_s)) + (
                s.offset_w * rel
            )
        if self.truth.constant is not None:
            return self._scale(self.truth.constant) * rel
        k = self._tick(rel)
        if rel <= 0:
            return self._reading(k) * rel
        i = k - self._k0  # complete periods before tick k are in _held[i]
        held = self._held
        while len(held) <= i:
            j = len(held) - 1  # extend from tick k0 + j to k0 + j + 1
            start = max(self._time(self._k0 + j), 0.0)
            held.append(
                held[j] + self._reading(self._k0 + j) * (self._time(self._k0 + j + 1) - start)
            )
        return held[i] + self._reading(k) * (rel - max(self._time(k), 0.0))

    # -- readings ---------------------------------------------------------------------------

    def instant_w(self, rel: float) -> float:
        s = self.sensor
        if s.update_s == 0:
            return self._scale(self.truth.power(max(rel - s.delay_s, 0.0)))
        return self._reading(self._tick(rel))

    def average_w(self, rel: float) -> float:
        s = self.sensor
        if s.update_s == 0:
            # The mean of the readings over the last average_s (over the past before creation
            # at the first power, as for a board that ran before).
            # The mean of the readings over the last average_s, or since creation during the
            # first average_s (as the simulator has always done).
            window = min(s.average_s, rel)
            if window <= 0:
                return self.instant_w(rel)
            return (self._held_integral(rel) - self._held_integral(rel - window)) / window
        if self.truth.constant is not None:
            return self._scale(self.truth.constant)
        k = self._tick(rel)
        n = self._n_average
        return sum(self._reading(k - j) for j in range(n)) / n

    def average_field_w(self, rel: float) -> float | None:
        s = self.sensor
        if s.update_s and s.average_s <= s.update_s:
            return None  # no separate average (GA100: power.draw is the instant reading)
        return self.average_w(rel)

    def counter_j(self, rel: float) -> float:
        s = self.sensor
        if s.counter == "sensor":
            return self._held_integral(rel)
        truth = self.truth
        if truth.constant is not None:
            return self._scale(truth.constant) * rel
        return s.gain * (truth.energy(rel - s.delay_s) - truth.energy(-s.delay_s)) + (
            s.offset_w * rel
        )

    def published_j(self, source: Source, rel0: float, rel1: float) -> float:
        if source == "counter":
            return self.counter_j(rel1) - self.counter_j(rel0)
        if source == "instant":
            return self._held_integral(rel1) - self._held_integral(rel0)
        s = self.sensor
        if s.update_s == 0 or self.truth.constant is not None:
            steps = max(1, math.ceil((rel1 - rel0) / 0.001))
            dt = (rel1 - rel0) / steps
            return sum(self.average_w(rel0 + (i + 0.5) * dt) for i in range(steps)) * dt
        # Held per publication period: sum over the ticks in [rel0, rel1].
        total = 0.0
        t = rel0
        while t < rel1:
            nxt = min(self._time(self._tick(t) + 1), rel1)
            total += self.average_w(t) * (nxt - t)
            t = nxt
        return total


class _RecordedReadings(_Readings):
    """A recording's driver readings, replayed as recorded (held from row to row), looping
    every ``loop_s`` seconds. No energy counter was recorded."""

    def __init__(self, recording: Recording, loop_s: float) -> None:
        self.recording = recording
        self.loop_s = loop_s
        self.describe = (
            f"replays the driver readings recorded in {recording.name} "
            f"({', '.join(recording.fields)}; no energy counter was recorded)"
        )
        fields = recording.fields
        self._instant = "power.draw.instant" if "power.draw.instant" in fields else None
        self._usage = "power.draw" if "power.draw" in fields else fields[0]
        self._average = "power.draw.average" if "power.draw.average" in fields else None

    def _at(self, rel: float) -> float:
        return rel % self.loop_s if rel >= 0 else 0.0

    def instant_w(self, rel: float) -> float | None:
        if self._instant is None:
            return None
        return self.recording.driver_power_w(self._instant, self._at(rel))

    def average_w(self, rel: float) -> float:
        return self.recording.driver_power_w(self._usage, self._at(rel))

    def average_field_w(self, rel: float) -> float | None:
        if self._average is None:
            return None
        return self.recording.driver_power_w(self._average, self._at(rel))

    def counter_j(self, rel: float) -> float | None:
        return None

    def field(self, source: Source) -> str:
        if source == "instant" and self._instant is not None:
            return self._instant
        if source == "average" and self._average is not None:
            return self._average
        return self._usage

    def published_j(self, source: Source, rel0: float, rel1: float) -> float:
        field = self.field(source)
        rec = self.recording

        def cumulative(rel: float) -> float:
            if rel <= 0:
                return rec.driver_power_w(field, 0.0) * rel
            loops, within = divmod(rel, self.loop_s)
            per_loop = rec.driver_cumulative_j(field, self.loop_s)
            return loops * per_loop + rec.driver_cumulative_j(field, within)

        return cumulative(rel1) - cumulative(rel0)


# -- the board ------------------------------------------------------------------------------


class SimulatedGPU:
    """One simulated NVIDIA GPU with programmable power and a realistic power sensor.

    ``power_w`` (what the board truly draws) is constant watts, a function of ``t`` (the
    seconds since the simulator was created by ``clock``), or a `PowerTrace` (a recording's
    external-meter trace, `meter.testing.traces.TracePower`). The true energy is exact for a
    constant and a trace and integrated with the midpoint rule (1 ms steps, cached) for a
    function.

    ``sensor`` says how NVML sees it (`meter.testing.sensor`): a preset name ("h100", the
    default; "a100", "rtx3090", "rtx4090", "rtxa5000"; "ideal" for a board that publishes its
    true power) or a `Sensor`. `replay` builds a board from a recording.

    What NVML sees, like a real board:

    * ``nvmlDeviceGetTotalEnergyConsumption``: integer millijoules of the sensor's energy
      counter, published only every ``counter_update_s`` (ticks at creation + phase + k x
      period; the phase is random in ``[0, counter_update_s)`` unless ``counter_phase_s`` is
      given). ``0`` means continuous. ``energy_counter=False`` makes it raise
      NVML_ERROR_NOT_SUPPORTED (pre-Volta boards).
    * ``nvmlDeviceGetPowerUsage``: integer milliwatts, the sensor's averaged reading (a 1 s
      average on Hopper and Ampere consumer boards, the instantaneous reading on A100).
    * field ``NVML_FI_DEV_POWER_INSTANT``: integer milliwatts of the latest instantaneous
      reading; with ``instant_power=False`` its ``nvmlReturn`` is NVML_ERROR_NOT_SUPPORTED
      (older drivers). Field ``NVML_FI_DEV_POWER_AVERAGE`` where the sensor averages.

    Every NVML call on this GPU is counted in ``calls`` (a `collections.Counter` keyed by NVML
    function name), errors included, so tests can assert "no NVML call on the request path".
    The GPU is thread-safe.

    Faults to inject: `inject_error` (any NVML error, e.g. the counter turning NotSupported
    mid-run) and `inject_hang`; for the energy counter's value, `inject_counter_glitch` (the
    next reads are off, then right again), `shift_counter` (it moves for good) and
    `reset_counter` (it restarts from 0, as after a driver reload). ``power_limit_w`` is what
    ``nvmlDeviceGetEnforcedPowerLimit`` (and the management limit and its constraints' maximum)
    answer, the bound `meter` checks counter steps against.

        >>> clock = iter([0.0, 0.25, 0.25]).__next__
        >>> gpu = SimulatedGPU(lambda t: 100.0 + 400.0 * t, clock=clock, counter_update_s=0)
        >>> round(gpu.energy_j(), 6)  # integral of 100 + 400 t over [0, 0.25]
        37.5
    """

    def __init__(
        self,
        power_w: float | Callable[[float], float] | PowerTrace = 300.0,
        *,
        energy_counter: bool = True,
        instant_power: bool = True,
        counter_update_s: float = 0.1,
        counter_phase_s: float | None = None,
        sensor: str | Sensor | None = None,
        model: str = "Simulated NVIDIA H100 80GB HBM3",
        uuid: str | None = None,
        power_limit_w: float = 700.0,
        mig_uuids: Iterable[str] = (),
        clock: Callable[[], float] = time.perf_counter,
        initial_energy_j: float = 1_000_000.0,
        _recorded: tuple[Recording, float] | None = None,
    ) -> None:
        self._truth = _truth(power_w)
        if not math.isfinite(counter_update_s) or counter_update_s < 0:
            raise ValueError(
                f"SimulatedGPU counter_update_s must be >= 0 seconds (0 = continuous counter), "
                f"got {counter_update_s!r}; real boards publish about every 0.1 s"
            )
        if counter_update_s == 0:
            counter_phase_s = 0.0  # a continuous counter has no ticks
        elif counter_phase_s is None:
            counter_phase_s = random.uniform(0.0, counter_update_s)
        elif not 0 <= counter_phase_s < counter_update_s:
            raise ValueError(
                f"SimulatedGPU counter_phase_s must be in [0, counter_update_s) = "
                f"[0, {counter_update_s}), got {counter_phase_s!r}"
            )
        _check_watts(power_limit_w, "SimulatedGPU power_limit_w")
        mig_uuids = tuple(mig_uuids)
        for mig in mig_uuids:
            if not mig.startswith("MIG-"):
                raise ValueError(
                    f"SimulatedGPU mig_uuids entries must start with 'MIG-' "
                    f"(e.g. 'MIG-4f8a1c2e-0000-0000-0000-000000000001'), got {mig!r}"
                )
        if uuid is not None and not uuid.startswith("GPU-"):
            raise ValueError(
                f"SimulatedGPU uuid must start with 'GPU-' like nvidia-smi's, got {uuid!r}"
            )
        if not math.isfinite(initial_energy_j) or initial_energy_j < 0:
            raise ValueError(
                f"SimulatedGPU initial_energy_j must be >= 0 joules, got {initial_energy_j!r}"
            )
        #: What the counter held at creation: boards count from boot, not from when you look.
        self.initial_energy_j = float(initial_energy_j)
        self.energy_counter = energy_counter
        self.instant_power = instant_power
        self.counter_update_s = float(counter_update_s)
        self.counter_phase_s = float(counter_phase_s)
        self.model = model
        self.uuid = uuid if uuid is not None else f"GPU-{uuid_module.uuid4()}"
        self.power_limit_w = float(power_limit_w)
        self.mig_uuids: tuple[str, ...] = mig_uuids
        self.clock = clock
        #: NVML calls made on this GPU, by function name (errors included).
        self.calls: collections.Counter[str] = collections.Counter()
        self._readings: _Readings
        self.sensor: Sensor | None
        if _recorded is not None:
            self.sensor = None
            self._readings = _RecordedReadings(*_recorded)
            self._loop_s: float | None = _recorded[1]
        else:
            self.sensor = sensor_preset(DEFAULT_SENSOR if sensor is None else sensor)
            # The sensor publishes from the same firmware loop as the counter: same phase.
            self._readings = _ModelReadings(self.sensor, self._truth, self.counter_phase_s)
            trace = power_w if isinstance(self._truth, _Trace) else None
            self._loop_s = getattr(trace, "loop_s", None)
        self._lock = threading.Lock()
        self._errors: list[_InjectedError] = []
        self._hangs: list[_InjectedHang] = []
        self._counter_high_mj = 0
        # Counter faults (millijoules): a lasting shift, and a glitch for the next reads.
        self._counter_shift_mj = 0
        self._glitch_mj = 0
        self._glitch_reads = 0
        self._loop_noted = False
        self.created_s = clock()

    @classmethod
    def replay(
        cls,
        recording: Recording | str,
        *,
        mode: Literal["recorded", "reference"] = "recorded",
        sensor: str | Sensor | None = None,
        **options: object,
    ) -> SimulatedGPU:
        """A board that replays a recording (`meter.testing.traces`) from its creation on.

        Its true power is the recording's external-meter trace. In ``recorded`` mode NVML's
        power readings are exactly the driver readings recorded beside it (held from row to
        row) and there is no energy counter, so `meter` takes its sampled path on the real
        sensor's output. In ``reference`` mode NVML's readings and counter come from a sensor
        model applied to the trace (``sensor``, default: the preset of the recording's GPU
        family, e.g. "a100" for a folder named A100). The replay loops after
        ``recording.end_s`` seconds (logged once).
        """
        from meter.testing.traces import TracePower, load_recording

        rec = load_recording(recording) if isinstance(recording, str) else recording
        trace = TracePower(rec)
        options.setdefault("model", f"Replayed {rec.path.name} ({rec.name})")
        if mode == "recorded":
            options.setdefault("instant_power", "power.draw.instant" in rec.fields)
            options["energy_counter"] = False
            return cls(trace, _recorded=(rec, trace.loop_s), **options)  # type: ignore[arg-type]
        if mode != "reference":
            raise ValueError(f"replay mode must be 'recorded' or 'reference', got {mode!r}")
        chosen = sensor if sensor is not None else sensor_for_model(rec.path.name)
        return cls(trace, sensor=chosen, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        truth = self._truth
        if isinstance(truth, _Trace):
            power = f"trace {truth.trace.name}"
        elif truth.constant is None:
            power = "callable"
        else:
            power = f"{truth.constant:g} W"
        return f"SimulatedGPU({power}, model={self.model!r}, uuid={self.uuid!r})"

    @property
    def describe(self) -> str:
        """How this board's readings are made, for ``meter devices``."""
        return self._readings.describe

    # -- the truth, for tests --------------------------------------------------------------

    def power_at(self, t: float | None = None) -> float:
        """True watts at clock time ``t`` (default now), from ``power_w``."""
        with self._lock:
            return self._truth.power(max(self._rel(t), 0.0))

    def energy_j(self, t: float | None = None) -> float:
        """True cumulative joules from creation to clock time ``t`` (default now)."""
        with self._lock:
            rel = self._rel(t)
            return self._truth.energy(rel) if rel > 0 else 0.0

    def energy_between_j(self, t0: float, t1: float) -> float:
        """True joules between clock times ``t0`` and ``t1`` (negative when ``t1 < t0``)."""
        with self._lock:
            return self._truth.energy(t1 - self.created_s) - self._truth.energy(t0 - self.created_s)

    def published_energy_between_j(self, t0: float, t1: float, source: Source = "counter") -> float:
        """Joules between clock times ``t0`` and ``t1`` of what the board publishes: its energy
        counter (continuous, before the publication ticks and the millijoule floor), or the
        integral of its ``instant`` or ``average`` power readings, each held until the next.
        The reference for "what does meter add to what the driver published"."""
        with self._lock:
            readings = self._readings
            if source == "counter" and readings.counter_j(0.0) is None:
                raise ValueError(f"{self!r} has no energy counter")
            return readings.published_j(source, t0 - self.created_s, t1 - self.created_s)

    def counter_time(self, t: float | None = None) -> float:
        """Clock time of the energy-counter value published at clock time ``t`` (default now).

        That is the last tick at or before ``t`` (or ``t`` itself for a continuous counter).
        """
        with self._lock:
            return self.created_s + self._tick(self._rel(t))

    # -- injected errors ---------------------------------------------------------------------

    def inject_error(
        self,
        kind: str = "gpu_lost",
        *,
        after_s: float | None = None,
        calls: Iterable[str] | None = None,
    ) -> None:
        """Make NVML calls on this GPU fail with the real ``pynvml.NVMLError`` for ``kind``.

        ``kind`` is "gpu_lost" (NVML_ERROR_GPU_IS_LOST), "not_supported", "unknown", "timeout"
        (or any other ``NVML_ERROR_*`` name in lower case). The error starts now, or
        ``after_s`` seconds from now (by the GPU's clock), and hits every call on this GPU, or
        only the NVML functions named in ``calls``
        (e.g. ``["nvmlDeviceGetTotalEnergyConsumption"]``). It lasts until `clear_errors`.
        """
        code = _error_code(kind)
        if after_s is not None and (not math.isfinite(after_s) or after_s < 0):
            raise ValueError(f"inject_error after_s must be >= 0 seconds, got {after_s!r}")
        names = None if calls is None else frozenset(calls)
        since = self.clock() + (after_s or 0.0)
        with self._lock:
            self._errors.append(_InjectedError(code, since, names))

    def clear_errors(self) -> None:
        """Remove every injected error and release every injected hang."""
        # Release the hangs first, without the board's lock: a hung call holds it.
        for hang in list(self._hangs):
            hang.release.set()
        with self._lock:
            self._errors.clear()
            self._hangs = []

    def inject_hang(
        self,
        release: threading.Event | None = None,
        *,
        calls: Iterable[str] | None = None,
        timeout_s: float = 60.0,
    ) -> threading.Event:
        """Make NVML calls on this GPU hang, like a driver that stops answering, until
        ``release`` is set (returned; a new one by default) or ``timeout_s`` passes. It hits
        every call, or only the NVML functions named in ``calls``, made from now on. A hung
        call holds the board, so other calls on this GPU wait behind it, as on a real driver.
        `clear_errors` releases it too."""
        event = release if release is not None else threading.Event()
        names = None if calls is None else frozenset(calls)
        with self._lock:
            self._hangs.append(_InjectedHang(event, names, timeout_s))
        return event

    # -- injected counter faults ---------------------------------------------------------------

    def inject_counter_glitch(self, delta_mj: int, *, reads: int = 1) -> None:
        """Make the next ``reads`` energy-counter reads return the true value + ``delta_mj``
        (negative for a read that steps back; floored at 0), like one bad read of a real board.
        Reads after those are right again. A new glitch replaces one still pending.

            >>> from meter.testing.nvml import FakeNVML
            >>> gpu = SimulatedGPU(300.0, initial_energy_j=1000.0, counter_update_s=0,
            ...                    clock=lambda: 5.0)
            >>> nvml = FakeNVML([gpu])
            >>> nvml.nvmlInit()
            >>> handle = nvml.nvmlDeviceGetHandleByIndex(0)
            >>> gpu.inject_counter_glitch(-1000)
            >>> [nvml.nvmlDeviceGetTotalEnergyConsumption(handle) for _ in range(2)]
            [999000, 1000000]
        """
        if isinstance(delta_mj, bool) or not isinstance(delta_mj, int):
            raise ValueError(
                f"inject_counter_glitch delta_mj must be integer millijoules, got {delta_mj!r}"
            )
        if isinstance(reads, bool) or not isinstance(reads, int) or reads < 1:
            raise ValueError(f"inject_counter_glitch reads must be an integer >= 1, got {reads!r}")
        with self._lock:
            self._glitch_mj, self._glitch_reads = delta_mj, reads

    def shift_counter(self, delta_mj: int) -> None:
        """Move the energy counter by ``delta_mj`` for good, from now on (negative: it steps
        back and stays there; floored at 0), then it counts on normally from the new level."""
        if isinstance(delta_mj, bool) or not isinstance(delta_mj, int):
            raise ValueError(
                f"shift_counter delta_mj must be integer millijoules, got {delta_mj!r}"
            )
        with self._lock:
            self._counter_shift_mj += delta_mj

    def reset_counter(self) -> None:
        """Restart the energy counter from 0 now, as a driver reload or a GPU reset does: reads
        from now on count the energy since this call."""
        with self._lock:
            base = self._base_counter_mj(self.clock())
            if base is not None:
                self._counter_shift_mj = -base

    # -- what NVML reads (called by FakeNVML; the caller holds ``_lock``) --------------------

    def _enter(self, function: str) -> float:
        """Count an NVML call, raise an injected error if one applies; return the clock time."""
        self.calls[function] += 1
        for hang in self._hangs:
            if not hang.release.is_set() and (hang.calls is None or function in hang.calls):
                hang.release.wait(hang.timeout_s)  # holding the board, as a hung driver does
        now = self.clock()
        for error in self._errors:
            if now >= error.since and (error.calls is None or function in error.calls):
                raise pynvml.NVMLError(error.code)
        looped = self._loop_s is not None and now - self.created_s >= self._loop_s
        if looped and not self._loop_noted:
            self._loop_noted = True
            log.warning(
                "meter.testing: %r reached the end of its recording (%.1f s) and replays it "
                "again from the start; figures from here on repeat the recording",
                self,
                self._loop_s,
            )
        return now

    def _counter_mj(self, now: float) -> int | None:
        """The counter's value read at ``now``, injected faults included (a pending glitch is
        used up)."""
        base = self._base_counter_mj(now)
        if base is None:
            return None
        mj = max(base + self._counter_shift_mj, 0)
        if self._glitch_reads > 0:
            self._glitch_reads -= 1
            mj = max(mj + self._glitch_mj, 0)
        return mj

    def _base_counter_mj(self, now: float) -> int | None:
        """The counter as the sensor model publishes it, before injected faults."""
        counter = self._readings.counter_j(self._tick(now - self.created_s))
        if counter is None:
            return None
        mj = math.floor(1000.0 * max(self.initial_energy_j + counter, 0.0) + _FLOOR_EPS)
        # A counter never steps back, even where a negative sensor offset would make the
        # modelled readings fall below zero.
        if mj < self._counter_high_mj:
            return self._counter_high_mj
        self._counter_high_mj = mj
        return mj

    def _average_mw(self, now: float) -> int:
        watts = self._readings.average_w(now - self.created_s)
        return round(1000.0 * (watts or 0.0))

    def _instant_mw(self, now: float) -> int | None:
        watts = self._readings.instant_w(now - self.created_s)
        return None if watts is None else round(1000.0 * watts)

    def _average_field_mw(self, now: float) -> int | None:
        watts = self._readings.average_field_w(now - self.created_s)
        return None if watts is None else round(1000.0 * watts)

    # -- internals (the caller holds the lock) -----------------------------------------------

    def _rel(self, t: float | None) -> float:
        return (self.clock() if t is None else t) - self.created_s

    def _tick(self, rel: float) -> float:
        """Relative time of the last counter publication at or before ``rel``."""
        period = self.counter_update_s
        if period == 0:
            return rel
        # Ticks run from before creation too: a board's counter has been publishing since boot.
        since_first = rel - self.counter_phase_s
        return self.counter_phase_s + math.floor(since_first / period) * period

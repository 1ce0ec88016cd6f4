"""Simulated NVIDIA GPUs and a fake NVML module to run the real device code without a GPU.

`SimulatedGPU` is a board with programmable power (constant watts, or a function of time), an
energy counter that publishes like a real one (every ``counter_update_s``), NVML's 1 s average
power and the instantaneous power field, MIG instances, and errors you can inject.
`FakeNVML` exposes the subset of the ``pynvml`` API that `meter.devices.nvml` uses, with the
real signatures, constants and error classes, so the device code runs unchanged on it.

    >>> from meter.devices.nvml import open_gpus
    >>> from meter.testing.nvml import FakeNVML, SimulatedGPU
    >>> gpus, unavailable, warnings = open_gpus(nvml=FakeNVML([SimulatedGPU(300.0)]), visible=None)
    >>> gpus[0].info.key, gpus[0].info.method
    ('gpu:0', 'simulated')

Subprocesses (the CLI, a server) run on simulated GPUs with ``METER_SIMULATE_GPUS=300,150``; see
`parse_simulate_env`. Results obtained this way are always labelled ``simulated``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import math
import random
import threading
import time
import uuid as uuid_module
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import pynvml

from meter.errors import ConfigError

__all__ = ["FakeNVML", "SimulatedGPU", "parse_simulate_env", "simulated_gpus"]

#: Integration step for a power function of time (midpoint rule).
_STEP_S = 1e-3
#: Keep a checkpoint of the integral every this many steps, so that queries into the past
#: (the 1 s power average, `energy_between_j`) integrate at most this many steps.
_CHECKPOINT_STEPS = 100
#: NVML's power readout on Ampere and newer averages over this window.
_AVERAGE_WINDOW_S = 1.0
#: Absorbs float noise before flooring joules to millijoules (300 W x 0.1 s is 30000.000000004 mJ).
_FLOOR_EPS = 1e-6

#: Error kinds for `SimulatedGPU.inject_error` and `FakeNVML(fail_init=...)`: a few friendly
#: names, plus any ``NVML_ERROR_<NAME>`` of pynvml written in lower case ("no_permission").
_ERROR_ALIASES = {"gpu_lost": "GPU_IS_LOST"}


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


class SimulatedGPU:
    """One simulated NVIDIA GPU with programmable power.

    ``power_w`` is constant watts, or a function of ``t``, the seconds since the simulator was
    created (by ``clock``). The true energy is exact for a constant and integrated with the
    midpoint rule (1 ms steps, cached incrementally) for a function.

    What NVML sees, like a real board:

    * ``nvmlDeviceGetTotalEnergyConsumption``: integer millijoules, published only every
      ``counter_update_s`` (ticks at creation + phase + k x period; the phase is random in
      ``[0, counter_update_s)`` unless ``counter_phase_s`` is given). ``0`` means continuous.
      ``energy_counter=False`` makes it raise NVML_ERROR_NOT_SUPPORTED (pre-Volta boards).
    * ``nvmlDeviceGetPowerUsage``: integer milliwatts averaged over the last 1 s (Ampere and
      newer; over the time since creation during the first second).
    * field ``NVML_FI_DEV_POWER_INSTANT``: integer milliwatts now; with ``instant_power=False``
      its ``nvmlReturn`` is NVML_ERROR_NOT_SUPPORTED (older drivers).

    Every NVML call on this GPU is counted in ``calls`` (a `collections.Counter` keyed by NVML
    function name), errors included, so tests can assert "no NVML call on the request path".
    The GPU is thread-safe.

        >>> clock = iter([0.0, 0.25, 0.25]).__next__
        >>> gpu = SimulatedGPU(lambda t: 100.0 + 400.0 * t, clock=clock, counter_update_s=0)
        >>> round(gpu.energy_j(), 6)  # integral of 100 + 400 t over [0, 0.25]
        37.5
    """

    def __init__(
        self,
        power_w: float | Callable[[float], float] = 300.0,
        *,
        energy_counter: bool = True,
        instant_power: bool = True,
        counter_update_s: float = 0.1,
        counter_phase_s: float | None = None,
        model: str = "Simulated NVIDIA H100 80GB HBM3",
        uuid: str | None = None,
        power_limit_w: float = 700.0,
        mig_uuids: Sequence[str] = (),
        clock: Callable[[], float] = time.perf_counter,
        initial_energy_j: float = 1_000_000.0,
    ) -> None:
        if callable(power_w):
            self._power_fn: Callable[[float], float] | None = power_w
            self._constant_w = 0.0
        else:
            self._power_fn = None
            self._constant_w = _check_watts(power_w, "SimulatedGPU power_w")
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
        self.mig_uuids: tuple[str, ...] = tuple(mig_uuids)
        self.clock = clock
        #: NVML calls made on this GPU, by function name (errors included).
        self.calls: collections.Counter[str] = collections.Counter()

        self._lock = threading.Lock()
        self._errors: list[_InjectedError] = []
        self.created_s = clock()
        # Integral of a power function: energy at the step grid, cached up to `_steps_done`,
        # with checkpoints every `_CHECKPOINT_STEPS` steps for queries into the past.
        self._steps_done = 0
        self._energy_done_j = 0.0
        self._checkpoints_j = array("d", [0.0])
        if self._power_fn is not None:
            self._power(0.0)  # fail now, not at the first NVML call, if the function is broken

    def __repr__(self) -> str:
        power = "callable" if self._power_fn is not None else f"{self._constant_w:g} W"
        return f"SimulatedGPU({power}, model={self.model!r}, uuid={self.uuid!r})"

    # -- the truth, for tests --------------------------------------------------------------

    def power_at(self, t: float | None = None) -> float:
        """Watts at clock time ``t`` (default now), from ``power_w``."""
        with self._lock:
            return self._power(self._rel(t))

    def energy_j(self, t: float | None = None) -> float:
        """True cumulative joules from creation to clock time ``t`` (default now)."""
        with self._lock:
            return self._energy(self._rel(t))

    def energy_between_j(self, t0: float, t1: float) -> float:
        """True joules between clock times ``t0`` and ``t1`` (negative when ``t1 < t0``)."""
        with self._lock:
            return self._energy(t1 - self.created_s) - self._energy(t0 - self.created_s)

    def counter_time(self, t: float | None = None) -> float:
        """Clock time of the energy-counter value published at clock time ``t`` (default now).

        That is the last tick at or before ``t`` (or ``t`` itself for a continuous counter), so
        the counter reads ``floor(1000 * energy_j(counter_time(t)))`` mJ.
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
        """Remove every injected error."""
        with self._lock:
            self._errors.clear()

    # -- what NVML reads (called by FakeNVML) -----------------------------------------------

    def _enter(self, function: str) -> float:
        """Count an NVML call, raise an injected error if one applies; return the clock time.

        The caller holds ``self._lock``.
        """
        self.calls[function] += 1
        now = self.clock()
        for error in self._errors:
            if now >= error.since and (error.calls is None or function in error.calls):
                raise pynvml.NVMLError(error.code)
        return now

    def _counter_mj(self, now: float) -> int:
        rel = self._tick(now - self.created_s)
        if rel < 0:
            # Published before creation: the board ran at its initial power before then.
            before = self.initial_energy_j + self._power(0.0) * rel
            return math.floor(1000.0 * max(before, 0.0) + _FLOOR_EPS)
        return math.floor(1000.0 * (self.initial_energy_j + self._energy(rel)) + _FLOOR_EPS)

    def _average_mw(self, now: float) -> int:
        rel = now - self.created_s
        if rel <= 0:
            return int(1000.0 * self._power(0.0))
        if self._power_fn is None:
            return int(1000.0 * self._constant_w)
        start = max(rel - _AVERAGE_WINDOW_S, 0.0)
        watts = (self._energy(rel) - self._energy(start)) / (rel - start)
        return int(1000.0 * watts)

    def _instant_mw(self, now: float) -> int:
        return int(1000.0 * self._power(now - self.created_s))

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

    def _power(self, rel: float) -> float:
        if self._power_fn is None:
            return self._constant_w
        watts = float(self._power_fn(rel))
        if not math.isfinite(watts) or watts < 0:
            raise ValueError(
                f"SimulatedGPU power_w({rel!r}) returned {watts!r}: a power function must "
                f"return finite watts >= 0 for every t >= 0"
            )
        return watts

    def _energy(self, rel: float) -> float:
        """Joules from creation to ``rel`` seconds after it."""
        if rel <= 0:
            return 0.0
        if self._power_fn is None:
            return self._constant_w * rel
        # Midpoint rule on a fixed 1 ms grid from creation; linear inside the last cell, so the
        # result does not depend on the order of queries and is monotonic in `rel`.
        step = int(rel / _STEP_S)
        if step >= self._steps_done:
            base_step, energy = self._steps_done, self._energy_done_j
        else:  # into the past: start from the last checkpoint before it
            base_step = (step // _CHECKPOINT_STEPS) * _CHECKPOINT_STEPS
            energy = self._checkpoints_j[step // _CHECKPOINT_STEPS]
        power = self._power
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


# -- the fake module ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _GpuHandle:
    """A device handle for a whole GPU (what ``nvmlDeviceGetHandleByIndex`` returns)."""

    gpu: SimulatedGPU
    index: int


@dataclass(frozen=True, eq=False)
class _MigHandle:
    """A device handle for a MIG instance of a GPU."""

    parent: _GpuHandle
    uuid: str


def _fail(code: int) -> NoReturn:
    raise pynvml.NVMLError(code)


class FakeNVML:
    """A module-like stand-in for ``pynvml`` over a list of `SimulatedGPU`.

    It has the functions `meter.devices.nvml` uses, with the real signatures, and re-exports
    the real constants and error classes (``NVMLError``, ``NVMLError_GPUIsLost``,
    ``NVML_ERROR_*``, ``NVML_SUCCESS``, ``NVML_FI_DEV_POWER_INSTANT``, ``NVML_VALUE_TYPE_*``).
    As with the real library, every call but ``nvmlInit`` raises NVML_ERROR_UNINITIALIZED until
    ``nvmlInit()``, and init/shutdown are reference counted. ``fail_init`` (an error kind such
    as "library_not_found" or "driver_not_loaded") makes ``nvmlInit`` fail like a machine
    without a driver. ``simulated`` is True (the real module has no such attribute), which the
    device code uses to label results ``simulated``.

    Calls on a MIG handle: name, UUID, ``nvmlDeviceIsMigDeviceHandle`` and
    ``nvmlDeviceGetDeviceHandleFromMigDeviceHandle`` work; energy and power raise
    NVML_ERROR_NOT_SUPPORTED, as NVML meters the whole GPU.

        >>> nvml = FakeNVML([SimulatedGPU(250.0)])
        >>> nvml.nvmlInit()
        >>> nvml.nvmlDeviceGetPowerUsage(nvml.nvmlDeviceGetHandleByIndex(0))
        250000
    """

    simulated = True

    NVMLError = pynvml.NVMLError
    NVML_SUCCESS: int = pynvml.NVML_SUCCESS
    NVML_FI_DEV_POWER_INSTANT: int = pynvml.NVML_FI_DEV_POWER_INSTANT
    NVML_ERROR_UNINITIALIZED: int = pynvml.NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT: int = pynvml.NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED: int = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NOT_FOUND: int = pynvml.NVML_ERROR_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST: int = pynvml.NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_FUNCTION_NOT_FOUND: int = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    NVML_ERROR_LIBRARY_NOT_FOUND: int = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED: int = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_UNKNOWN: int = pynvml.NVML_ERROR_UNKNOWN

    def __init__(
        self,
        gpus: Sequence[SimulatedGPU],
        *,
        fail_init: str | None = None,
        driver_version: str = "550.54.15",
    ) -> None:
        uuids = [g.uuid for g in gpus] + [m for g in gpus for m in g.mig_uuids]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"FakeNVML: GPU and MIG uuids must be unique, got {uuids}")
        self.gpus: tuple[SimulatedGPU, ...] = tuple(gpus)
        self.driver_version = driver_version
        self._fail_init = None if fail_init is None else _error_code(fail_init)
        #: Every NVML call on this fake, by function name (``nvmlInit`` included).
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._init_count = 0
        self._handles = tuple(_GpuHandle(gpu, i) for i, gpu in enumerate(self.gpus))
        self._by_uuid: dict[str, _GpuHandle | _MigHandle] = {}
        for handle in self._handles:
            self._by_uuid[handle.gpu.uuid] = handle
            for mig in handle.gpu.mig_uuids:
                self._by_uuid[mig] = _MigHandle(handle, mig)

    def __repr__(self) -> str:
        return f"FakeNVML({list(self.gpus)!r})"

    @property
    def initialized(self) -> bool:
        """Whether ``nvmlInit`` has been called more often than ``nvmlShutdown``."""
        return self._init_count > 0

    # -- library ------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        with self._lock:
            self.calls["nvmlInit"] += 1
            if self._fail_init is not None:
                _fail(self._fail_init)
            self._init_count += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            self.calls["nvmlShutdown"] += 1
            if self._init_count == 0:
                _fail(pynvml.NVML_ERROR_UNINITIALIZED)
            self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._system("nvmlDeviceGetCount")
        return len(self.gpus)

    # -- handles ------------------------------------------------------------------------------

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _GpuHandle:
        self._system("nvmlDeviceGetHandleByIndex")
        if not isinstance(index, int) or not 0 <= index < len(self._handles):
            _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        handle = self._handles[index]
        with handle.gpu._lock:
            handle.gpu._enter("nvmlDeviceGetHandleByIndex")
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _GpuHandle | _MigHandle:
        self._system("nvmlDeviceGetHandleByUUID")
        key = uuid.decode() if isinstance(uuid, bytes) else uuid
        handle = self._by_uuid.get(key)
        if handle is None:
            _fail(pynvml.NVML_ERROR_NOT_FOUND)
        gpu = handle.gpu if isinstance(handle, _GpuHandle) else handle.parent.gpu
        with gpu._lock:
            gpu._enter("nvmlDeviceGetHandleByUUID")
        return handle

    def nvmlDeviceIsMigDeviceHandle(self, device: Any) -> ctypes.c_uint:
        # The real pynvml returns the ctypes c_uint itself, not its value: use bool() on it.
        self._device("nvmlDeviceIsMigDeviceHandle", device)
        return ctypes.c_uint(1 if isinstance(device, _MigHandle) else 0)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> _GpuHandle:
        self._device("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice)
        if not isinstance(migDevice, _MigHandle):
            _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return migDevice.parent

    # -- identity -----------------------------------------------------------------------------

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        gpu = self._whole("nvmlDeviceGetIndex", handle)
        return self.gpus.index(gpu)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._device("nvmlDeviceGetName", handle)
        if isinstance(handle, _MigHandle):
            return f"{handle.parent.gpu.model} MIG 1g.10gb"
        return str(handle.gpu.model)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._device("nvmlDeviceGetUUID", handle)
        return handle.uuid if isinstance(handle, _MigHandle) else str(handle.gpu.uuid)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        gpu = self._whole("nvmlDeviceGetEnforcedPowerLimit", handle)
        return int(1000.0 * gpu.power_limit_w)

    # -- energy and power ---------------------------------------------------------------------

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu = self._gpu_of(handle)
        with gpu._lock:
            now = gpu._enter("nvmlDeviceGetTotalEnergyConsumption")
            if not gpu.energy_counter or isinstance(handle, _MigHandle):
                _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return gpu._counter_mj(now)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu_of(handle)
        with gpu._lock:
            now = gpu._enter("nvmlDeviceGetPowerUsage")
            if isinstance(handle, _MigHandle):
                _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return gpu._average_mw(now)

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Sequence[Any]) -> Any:
        """Real ``c_nvmlFieldValue_t`` structs; only the instant power field has a value."""
        gpu = self._gpu_of(handle)
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        timestamp_us = time.time_ns() // 1000
        with gpu._lock:
            now = gpu._enter("nvmlDeviceGetFieldValues")
            for value, field in zip(values, fieldIds, strict=True):
                field_id, scope_id = field if isinstance(field, tuple) else (field, 0)
                value.fieldId = field_id
                value.scopeId = scope_id
                value.timestamp = timestamp_us
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                supported = (
                    field_id == pynvml.NVML_FI_DEV_POWER_INSTANT
                    and gpu.instant_power
                    and not isinstance(handle, _MigHandle)
                )
                if supported:
                    value.nvmlReturn = pynvml.NVML_SUCCESS
                    value.value.uiVal = gpu._instant_mw(now)
                else:
                    value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    # -- internals ----------------------------------------------------------------------------

    def _system(self, function: str) -> None:
        self.calls[function] += 1
        if self._init_count == 0:
            _fail(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu_of(self, handle: Any) -> SimulatedGPU:
        if self._init_count == 0:
            _fail(pynvml.NVML_ERROR_UNINITIALIZED)
        if isinstance(handle, _GpuHandle) and handle in self._handles:
            return handle.gpu
        if isinstance(handle, _MigHandle) and handle.parent in self._handles:
            return handle.parent.gpu
        _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def _device(self, function: str, handle: Any) -> SimulatedGPU:
        self.calls[function] += 1
        gpu = self._gpu_of(handle)
        with gpu._lock:
            gpu._enter(function)
        return gpu

    def _whole(self, function: str, handle: Any) -> SimulatedGPU:
        gpu = self._device(function, handle)
        if isinstance(handle, _MigHandle):
            _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu


# Re-export the rest of the real constants and error classes (NVML_ERROR_*, NVMLError_*,
# NVML_VALUE_TYPE_*), so code written against pynvml finds them on the fake.
for _name in dir(pynvml):
    if _name.startswith(("NVML_ERROR_", "NVMLError_", "NVML_VALUE_TYPE_")):
        setattr(FakeNVML, _name, getattr(pynvml, _name))
del _name


def _as_gpus(gpus: Sequence[SimulatedGPU | float]) -> list[SimulatedGPU]:
    out: list[SimulatedGPU] = []
    for i, gpu in enumerate(gpus):
        if isinstance(gpu, SimulatedGPU):
            out.append(gpu)
        else:
            out.append(SimulatedGPU(power_w=float(gpu), uuid=_simulated_uuid(i)))
    return out


def _simulated_uuid(index: int) -> str:
    """A stable, recognisable UUID for simulated GPU ``index`` (not a real one: 'm' is no hex)."""
    return f"GPU-51m00000-0000-0000-0000-{index:012d}"


@contextlib.contextmanager
def simulated_gpus(gpus: Sequence[SimulatedGPU | float]) -> Iterator[FakeNVML]:
    """Run the real GPU device code on simulated GPUs inside the ``with`` block.

    Installs a `FakeNVML` as ``meter.devices.nvml._override`` and restores the previous value on
    exit. A float means ``SimulatedGPU(power_w=that)``.

        >>> from meter.devices.nvml import open_gpus
        >>> with simulated_gpus([300.0, 150.0]) as nvml:
        ...     gpus, _, _ = open_gpus(visible=None)
        ...     [g.info.key for g in gpus]
        ['gpu:0', 'gpu:1']
    """
    from meter.devices import nvml as nvml_devices

    fake = FakeNVML(_as_gpus(gpus))
    previous = nvml_devices._override
    nvml_devices._override = fake
    try:
        yield fake
    finally:
        nvml_devices._override = previous


_ENV_EXAMPLE = "METER_SIMULATE_GPUS=300,150"


def parse_simulate_env(value: str) -> list[SimulatedGPU]:
    """Simulated GPUs from the ``METER_SIMULATE_GPUS`` switch.

    Comma-separated entries, one per GPU: ``W`` (constant watts, with an energy counter) or
    ``W:sampled`` (no energy counter, so the device code takes the sampled path). GPU ``N``
    gets the stable UUID ``GPU-51m00000-0000-0000-0000-00000000000N``. A bad value raises
    `ConfigError` saying what is wrong.

        >>> [(g.power_at(), g.energy_counter) for g in parse_simulate_env("300, 75:sampled")]
        [(300.0, True), (75.0, False)]
    """
    entries = [entry.strip() for entry in value.split(",")]
    if not value.strip():
        raise ConfigError(
            f"METER_SIMULATE_GPUS is empty: give one power in watts per simulated GPU, "
            f"e.g. {_ENV_EXAMPLE} (or unset it to use real GPUs)",
            setting="METER_SIMULATE_GPUS",
        )
    gpus: list[SimulatedGPU] = []
    for index, entry in enumerate(entries):
        watts_text, _, mode = entry.partition(":")
        problem = None
        watts = math.nan
        try:
            watts = float(watts_text)
        except ValueError:
            problem = f"{watts_text.strip()!r} is not a number of watts"
        if problem is None and (not math.isfinite(watts) or watts < 0):
            problem = f"{watts_text.strip()!r} watts must be a finite number >= 0"
        if problem is None and mode.strip() not in ("", "sampled"):
            problem = f"unknown mode {mode.strip()!r} (the only mode is ':sampled')"
        if problem is None and not entry:
            problem = "it is empty"
        if problem is not None:
            raise ConfigError(
                f"METER_SIMULATE_GPUS={value!r}: entry {index} ({entry!r}): {problem}. "
                f"Give comma-separated watts per GPU, optionally with ':sampled' for a GPU "
                f"without an energy counter, e.g. {_ENV_EXAMPLE} "
                f"or METER_SIMULATE_GPUS=300,75:sampled",
                setting="METER_SIMULATE_GPUS",
            )
        gpus.append(
            SimulatedGPU(
                power_w=watts,
                energy_counter=mode.strip() != "sampled",
                uuid=_simulated_uuid(index),
            )
        )
    return gpus


class RecordingNVML:
    """A pynvml-like wrapper that counts NVML calls per calling thread's name, to show that a
    code path (a request, a scrape) makes none: ``Meter(nvml=RecordingNVML(FakeNVML(...)))``.

    >>> nvml = RecordingNVML(FakeNVML([SimulatedGPU(300.0)]))
    >>> nvml.nvmlInit()
    >>> dict(nvml.threads)
    {'MainThread': 1}
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.threads: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not name.startswith("nvml"):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.threads[threading.current_thread().name] += 1
            return value(*args, **kwargs)

        return recorded

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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import pynvml

from meter.errors import ConfigError
from meter.testing.sensor import SENSORS
from meter.testing.simgpu import SimulatedGPU, _error_code

__all__ = ["FakeNVML", "SimulatedGPU", "parse_simulate_env", "simulated_gpus"]

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


#: NVML_FI_DEV_POWER_AVERAGE (nvml.h); older pynvml releases lack the constant.
_FI_DEV_POWER_AVERAGE: int = getattr(pynvml, "NVML_FI_DEV_POWER_AVERAGE", 185)


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

    Faults: errors and hangs per GPU (`SimulatedGPU.inject_error`, `SimulatedGPU.inject_hang`),
    and counter values that glitch, move or restart (`SimulatedGPU.inject_counter_glitch`,
    `SimulatedGPU.shift_counter`, `SimulatedGPU.reset_counter`). ``simulation_clock(handle)``
    (not in pynvml) gives the device code the board's clock.

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

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        gpu = self._whole("nvmlDeviceGetPowerManagementLimit", handle)
        return int(1000.0 * gpu.power_limit_w)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        """``[min, max]`` settable limits in mW: here the board's limit is also its maximum."""
        gpu = self._whole("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        limit_mw = int(1000.0 * gpu.power_limit_w)
        return [min(limit_mw, 100_000), limit_mw]

    # -- energy and power ---------------------------------------------------------------------

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu = self._gpu_of(handle)
        with gpu._lock:
            now = gpu._enter("nvmlDeviceGetTotalEnergyConsumption")
            value = None
            if gpu.energy_counter and not isinstance(handle, _MigHandle):
                value = gpu._counter_mj(now)
            if value is None:
                _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return value

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu_of(handle)
        with gpu._lock:
            now = gpu._enter("nvmlDeviceGetPowerUsage")
            if isinstance(handle, _MigHandle):
                _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return gpu._average_mw(now)

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Sequence[Any]) -> Any:
        """Real ``c_nvmlFieldValue_t`` structs; only the power fields have values (instant, and
        average where the board's sensor averages)."""
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
                milliwatts = None
                if not isinstance(handle, _MigHandle):
                    if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and gpu.instant_power:
                        milliwatts = gpu._instant_mw(now)
                    elif field_id == _FI_DEV_POWER_AVERAGE:
                        milliwatts = gpu._average_field_mw(now)
                if milliwatts is not None:
                    value.nvmlReturn = pynvml.NVML_SUCCESS
                    value.value.uiVal = milliwatts
                else:
                    value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    # -- not in pynvml ------------------------------------------------------------------------

    def simulation_note(self, handle: Any) -> str:
        """How the board behind ``handle`` makes its readings (for ``meter devices``)."""
        gpu = self._gpu_of(handle)
        return gpu.describe

    def simulation_clock(self, handle: Any) -> Callable[[], float]:
        """The clock of the board behind ``handle`` (`SimulatedGPU.clock`): the device code
        times its counter reads with it, so tests on a fake clock check counter steps against
        the time that moved the counter."""
        return self._gpu_of(handle).clock

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


#: The fake NVML `simulated_gpus` installed (what `meter.devices.discover` uses), or None.
_installed: FakeNVML | None = None
# One FakeNVML per METER_SIMULATE_GPUS value, so every meter in a process shares the simulators.
_from_env: dict[str, FakeNVML] = {}
_from_env_lock = threading.Lock()


def installed_nvml() -> FakeNVML | None:
    """The fake NVML installed by `simulated_gpus`, if one is."""
    return _installed


def nvml_for_env(value: str) -> FakeNVML:
    """The fake NVML for a ``METER_SIMULATE_GPUS`` value: one per value in the process (a
    replay goes on across meters). A bad value raises `ConfigError`."""
    with _from_env_lock:
        fake = _from_env.get(value)
        if fake is None:
            fake = _from_env[value] = FakeNVML(parse_simulate_env(value))
        return fake


@contextlib.contextmanager
def simulated_gpus(gpus: Sequence[SimulatedGPU | float]) -> Iterator[FakeNVML]:
    """Run the real GPU device code on simulated GPUs inside the ``with`` block.

    Installs a `FakeNVML` that `meter.devices.discover` (hence every `Meter` built in the block)
    uses, and restores the previous one on exit. A float means ``SimulatedGPU(power_w=that)``.

        >>> from meter.devices import discover
        >>> with simulated_gpus([300.0, 150.0]) as nvml:
        ...     found = discover(cpu=False)
        ...     [d.info.key for d in found.devices]
        ['gpu:0', 'gpu:1']
    """
    global _installed
    fake = FakeNVML(_as_gpus(gpus))
    previous = _installed
    _installed = fake
    try:
        yield fake
    finally:
        _installed = previous


_ENV_EXAMPLE = "METER_SIMULATE_GPUS=300,150"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


_TRACE_PREFIXES = ("trace:", "reference:")


def _simulate_entry(entry: str, index: int) -> SimulatedGPU:
    """One ``METER_SIMULATE_GPUS`` entry; ValueError (with the problem) when it is bad."""
    uuid = _simulated_uuid(index)
    for prefix in _TRACE_PREFIXES:
        if entry.lower().startswith(prefix):
            path = entry[len(prefix) :].strip()
            if not path:
                raise ValueError(f"{prefix!r} needs a recording folder after it")
            mode = "recorded" if prefix == "trace:" else "reference"
            return SimulatedGPU.replay(path, mode=mode, uuid=uuid)  # type: ignore[arg-type]
    if not entry:
        raise ValueError("it is empty")
    watts_text, *modes = (part.strip() for part in entry.split(":"))
    try:
        watts = float(watts_text)
    except ValueError:
        raise ValueError(f"{_short(watts_text, 40)!r} is not a number of watts") from None
    if not math.isfinite(watts) or watts < 0:
        raise ValueError(f"{_short(watts_text, 40)!r} watts must be a finite number >= 0")
    sensor = None
    counter = True
    for mode in modes:
        if mode == "sampled":
            counter = False
        elif mode.lower() in SENSORS:
            sensor = mode.lower()
        else:
            raise ValueError(
                f"unknown mode {_short(mode, 40)!r} (use ':sampled' for a GPU without an energy "
                f"counter, or a sensor preset: {', '.join(SENSORS)})"
            )
    return SimulatedGPU(power_w=watts, energy_counter=counter, sensor=sensor, uuid=uuid)


def parse_simulate_env(value: str) -> list[SimulatedGPU]:
    """Simulated GPUs from the ``METER_SIMULATE_GPUS`` switch.

    Comma-separated entries, one per GPU:

    * ``W``: constant watts, with an energy counter, seen through the default (H100-like)
      sensor model; ``W:sampled``: without an energy counter, so the device code takes the
      sampled path; ``W:a100`` (or another preset of `meter.testing.sensor.SENSORS`, ``ideal``
      for a board that publishes its true power), alone or after ``:sampled``;
    * ``trace:DIR``: replays the recording in folder ``DIR`` (`meter.testing.traces`) in
      *recorded* mode: NVML's power readings are the driver readings recorded there, there is no
      energy counter, and the board's true power is the external meter's trace;
    * ``reference:DIR``: replays it in *reference* mode: the true power is the external meter's
      trace and NVML's readings and counter come from the sensor preset of the recording's GPU.

    A replay starts when the process first opens the simulated GPUs and loops at the end of
    the recording (logged once). GPU ``N`` gets the stable UUID
    ``GPU-51m00000-0000-0000-0000-00000000000N``. A bad value raises `ConfigError` saying what is
    wrong. Folder names cannot contain commas.

        >>> [(g.power_at(), g.energy_counter) for g in parse_simulate_env("300, 75:sampled")]
        [(300.0, True), (75.0, False)]
    """
    if not value.strip():
        raise ConfigError(
            f"METER_SIMULATE_GPUS is empty: give one power in watts per simulated GPU, "
            f"e.g. {_ENV_EXAMPLE} (or unset it to use real GPUs)",
            setting="METER_SIMULATE_GPUS",
        )
    gpus: list[SimulatedGPU] = []
    for index, entry in enumerate(part.strip() for part in value.split(",")):
        try:
            gpus.append(_simulate_entry(entry, index))
        except ValueError as error:  # ConfigError (a bad recording folder) is a ValueError too
            raise ConfigError(
                f"METER_SIMULATE_GPUS={_short(value)!r}: entry {index} ({_short(entry)!r}): "
                f"{error}. Give comma-separated watts per GPU, optionally with ':sampled' for a "
                f"GPU without an energy counter, e.g. {_ENV_EXAMPLE} or "
                f"METER_SIMULATE_GPUS=300,75:sampled, or trace:<recording folder>",
                setting="METER_SIMULATE_GPUS",
            ) from None
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

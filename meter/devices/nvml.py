"""NVIDIA GPUs through NVML: the energy counter where the board has one, power readings otherwise.

The same code runs on real GPUs (``pynvml``) and on simulated ones (`meter.testing.nvml`): the
NVML module is a parameter of `open_gpus` (default: the real library, `load_nvml`). Simulated
GPUs (``METER_SIMULATE_GPUS``, `meter.testing.simulated_gpus`) enter through
`meter.devices.discover`.

    >>> from meter.testing.nvml import FakeNVML, SimulatedGPU
    >>> gpus, unavailable, warnings = open_gpus(nvml=FakeNVML([SimulatedGPU(300.0)]), visible=None)
    >>> gpu = gpus[0]
    >>> energy_j = gpu.read().energy_j  # joules since open
    >>> gpu.close()
    >>> gpu.info.key, gpu.info.method, gpu.info.counter
    ('gpu:0', 'simulated', True)

Which GPUs: those CUDA can see (``CUDA_VISIBLE_DEVICES``, with CUDA's own rules), keyed by
their CUDA ordinal, so ``gpu:0`` is ``torch.device("cuda:0")``; `resolve_visible` documents
the rules.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

from meter.devices.base import DeviceInfo, Method, Reading, Unavailable
from meter.devices.counters import CounterValidator
from meter.errors import BadReading, ConfigError, DeviceError, DeviceUnavailable, MethodChanged

log = logging.getLogger("meter")

__all__ = [
    "NvmlGpu",
    "Visible",
    "load_nvml",
    "open_gpus",
    "parse_visible_devices",
    "resolve_visible",
]

SIMULATE_ENV: Final = "METER_SIMULATE_GPUS"
_SIMULATE_HINT: Final = f"set {SIMULATE_ENV}=300 to try meter on simulated GPUs"


class _Env(enum.Enum):
    """Sentinel: read the setting from the environment (``None`` already means "unset")."""

    FROM_ENV = "from environment"


FROM_ENV: Final = _Env.FROM_ENV


# -- loading NVML ---------------------------------------------------------------------------------


def _init_failure(nvml: Any, error: BaseException) -> tuple[str, str]:
    """Reason and fix for an NVML that would not load or initialise."""
    code = getattr(error, "value", None)
    reason = f"NVML could not be loaded ({error})"

    def is_(name: str) -> bool:
        return code is not None and code == getattr(nvml, f"NVML_ERROR_{name}", None)

    if is_("LIBRARY_NOT_FOUND"):
        return (
            f"{reason}: no NVIDIA driver on this machine.",
            f"Install the NVIDIA driver, or {_SIMULATE_HINT}.",
        )
    if is_("DRIVER_NOT_LOADED"):
        return (
            f"{reason}: the NVIDIA kernel driver is not running.",
            "Check `nvidia-smi`; load the driver (`sudo modprobe nvidia`, or reboot after an "
            "install), in a container pass the GPUs through (`docker run --gpus all`), or "
            f"{_SIMULATE_HINT}.",
        )
    if is_("NO_PERMISSION"):
        return (
            f"{reason}: this user may not open the GPU device files.",
            "Give this user read/write access to /dev/nvidia* (e.g. add it to the `video` "
            f"group), or {_SIMULATE_HINT}.",
        )
    if is_("LIB_RM_VERSION_MISMATCH"):
        return (
            f"{reason}: the NVML library and the loaded kernel driver are different versions.",
            "Reboot (or reload the nvidia kernel modules) after the driver upgrade.",
        )
    return (f"{reason}.", f"Check that `nvidia-smi` works, or {_SIMULATE_HINT}.")


def _init(nvml: Any) -> tuple[str, str] | None:
    """``nvmlInit()`` on ``nvml``; the reason and fix when it fails."""
    try:
        nvml.nvmlInit()
    except Exception as error:  # NVMLError, OSError from ctypes, anything a binding raises
        return _init_failure(nvml, error)
    return None


def _load() -> tuple[Any | None, tuple[str, str] | None]:
    try:
        import pynvml
    except ImportError as error:
        return None, (
            f"NVML could not be loaded: the nvidia-ml-py package is missing ({error}).",
            f"Install it with `pip install nvidia-ml-py`, or {_SIMULATE_HINT}.",
        )
    failure = _init(pynvml)
    return (None, failure) if failure else (pynvml, None)


def load_nvml() -> tuple[Any | None, str | None]:
    """The real ``pynvml``, initialised, or ``(None, why and how to fix it)``. (Simulated GPUs
    enter through `meter.devices.discover`, which hands their fake NVML to `open_gpus`.)

        >>> nvml, reason = load_nvml()
        >>> nvml is not None or "METER_SIMULATE_GPUS" in reason
        True
    """
    nvml, failure = _load()
    return nvml, None if failure is None else " ".join(failure)


# -- which GPUs are visible -----------------------------------------------------------------------


def parse_visible_devices(value: str | None) -> list[str] | None:
    """Entries of a ``CUDA_VISIBLE_DEVICES`` value: ``None`` (unset) means every GPU.

    >>> parse_visible_devices(None), parse_visible_devices(""), parse_visible_devices(" 1, 0")
    (None, [], ['1', '0'])
    """
    if value is None:
        return None
    if not value.strip():
        return []
    return [entry.strip() for entry in value.split(",")]


@dataclass(frozen=True)
class Visible:
    """A CUDA-visible GPU: the physical GPU NVML meters, and the MIG instance if one was named.

    ``error`` is set when NVML could not even describe the GPU; opening it then reports why.
    """

    handle: Any
    index: int
    uuid: str
    name: str
    mig_uuid: str | None = None
    error: BaseException | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_error(nvml: Any) -> type[BaseException]:
    error = getattr(nvml, "NVMLError", None)
    return error if isinstance(error, type) and issubclass(error, BaseException) else Exception


def _enumerate(nvml: Any) -> list[Visible]:
    """Every GPU NVML sees, in NVML (PCI bus) order."""
    nvml_error = _nvml_error(nvml)
    gpus = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            name = _text(nvml.nvmlDeviceGetName(handle))
        except nvml_error as error:
            gpus.append(Visible(None, index, "", "", error=error))
        else:
            gpus.append(Visible(handle, index, uuid, name))
    return gpus


_INDEX = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
_OLD_MIG = re.compile(r"MIG-(GPU-[0-9A-Za-z-]+)/([0-9]+)/([0-9]+)", re.IGNORECASE)


class _Invalid(Exception):
    """An entry CUDA would reject: it and every later entry are dropped."""


def _by_uuid_prefix(gpus: list[Visible], prefix: str) -> Visible:
    matches = [g for g in gpus if g.uuid and g.uuid.lower().startswith(prefix.lower())]
    if not matches:
        raise _Invalid("no GPU has this UUID")
    if len(matches) > 1:
        names = ", ".join(g.uuid for g in matches)
        raise _Invalid(f"an ambiguous UUID prefix ({names} all match)")
    return matches[0]


def _resolve_entry(nvml: Any, gpus: list[Visible], entry: str) -> Visible:
    if _INDEX.fullmatch(entry):
        index = int(entry)
        if index >= len(gpus):
            have = f"0..{len(gpus) - 1}" if gpus else "none"
            raise _Invalid(f"out of range (this machine has {len(gpus)} GPUs, indices {have})")
        return gpus[index]
    if _NEGATIVE.fullmatch(entry):
        raise _Invalid("a negative index (a common way to hide every GPU)")
    upper = entry.upper()
    if upper.startswith("GPU-"):
        return _by_uuid_prefix(gpus, entry)
    if upper.startswith("MIG-GPU-"):  # the pre-R470 form MIG-GPU-<gpu uuid>/<gi>/<ci>
        match = _OLD_MIG.fullmatch(entry)
        if match is None:
            raise _Invalid("not a MIG device (expected MIG-GPU-<uuid>/<gi>/<ci>)")
        parent = _by_uuid_prefix(gpus, match.group(1))
        return Visible(parent.handle, parent.index, parent.uuid, parent.name, mig_uuid=entry)
    if upper.startswith("MIG-"):
        nvml_error = _nvml_error(nvml)
        try:
            mig = nvml.nvmlDeviceGetHandleByUUID(entry)
            parent_uuid = _text(
                nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig))
            )
        except nvml_error as error:
            raise _Invalid(f"not a MIG instance NVML knows ({error})") from error
        for gpu in gpus:
            if gpu.uuid == parent_uuid:
                return Visible(gpu.handle, gpu.index, gpu.uuid, gpu.name, mig_uuid=entry)
        raise _Invalid(f"a MIG instance of {parent_uuid}, which NVML does not list")
    raise _Invalid("not a GPU index, a GPU-<uuid> or a MIG-<uuid>")


def resolve_visible(
    nvml: Any,
    entries: list[str] | None,
    *,
    device_order: str | Literal[_Env.FROM_ENV] | None = FROM_ENV,
) -> tuple[list[Visible], list[str]]:
    """The GPUs CUDA would see for ``CUDA_VISIBLE_DEVICES`` entries, and warnings.

    ``entries`` come from `parse_visible_devices`; ``None`` means every GPU. As CUDA does:

    * an integer is an index, a ``GPU-...`` string a UUID or a unique prefix of one, and
      ``MIG-<uuid>`` (or the old ``MIG-GPU-<uuid>/<gi>/<ci>``) a MIG instance, which is metered
      through its parent GPU (``Visible.mig_uuid`` says so);
    * the order of the entries is the CUDA ordinal order;
    * the first invalid entry (out of range, unknown UUID, negative, ambiguous prefix,
      duplicate) ends the list: the entries before it stay visible, a warning says what was
      dropped and why.

    NVML numbers GPUs in PCI bus order, CUDA fastest first unless
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. ``device_order`` (default: that variable) matters when
    indices are used (or none given) on a machine with mixed models: a warning then suggests
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
    """
    if device_order is FROM_ENV:
        device_order = os.environ.get("CUDA_DEVICE_ORDER")
    gpus = _enumerate(nvml)
    warnings: list[str] = []
    if entries is None:
        visible = list(gpus)
    else:
        visible = []
        for position, entry in enumerate(entries):
            try:
                found = _resolve_entry(nvml, gpus, entry)
                for earlier in visible:
                    if earlier.index == found.index and earlier.mig_uuid == found.mig_uuid:
                        raise _Invalid(f"a duplicate (the same GPU as NVML index {found.index})")
            except _Invalid as why:
                dropped = entries[position:]
                kept = ",".join(entries[:position])
                warnings.append(
                    f"CUDA_VISIBLE_DEVICES={','.join(entries)}: entry {entry!r} is {why}. As "
                    f"CUDA does, it and every entry after it ({', '.join(map(repr, dropped))}) "
                    f"are ignored, so "
                    + (f"only {kept} stay visible" if kept else "no GPU is visible")
                    + ". Fix CUDA_VISIBLE_DEVICES (`nvidia-smi -L` lists indices and UUIDs)."
                )
                break
            visible.append(found)

    uses_indices = entries is None or any(_INDEX.fullmatch(e) for e in entries)
    models = sorted({g.name for g in gpus if g.name})
    if uses_indices and len(models) > 1 and (device_order or "").upper() != "PCI_BUS_ID":
        warnings.append(
            f"This machine mixes GPU models ({', '.join(models)}) and CUDA_DEVICE_ORDER is "
            f"{device_order or 'unset'}: CUDA numbers GPUs fastest first while NVML numbers "
            f"them in PCI bus order, so the GPU CUDA calls N may not be the one NVML calls N. Set "
            f"CUDA_DEVICE_ORDER=PCI_BUS_ID (or list GPU UUIDs in CUDA_VISIBLE_DEVICES)."
        )
    return visible, warnings


# -- the device ---------------------------------------------------------------------------------

# nvmlFieldValue_t.valueType -> the member of its value union (NVML_VALUE_TYPE_* in nvml.h).
_VALUE_MEMBER: Final = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")

# What to do about an NVML error, by NVML_ERROR_<name>.
_HINTS: Final = {
    "GPU_IS_LOST": (
        "The GPU fell off the bus or was reset: check `nvidia-smi` and `dmesg` for Xid errors."
    ),
    "UNINITIALIZED": ("NVML was shut down under meter (did another library call nvmlShutdown?)."),
    "TIMEOUT": "The driver did not answer in time: check `nvidia-smi`.",
    "NO_PERMISSION": "This user may not query the GPU: check /dev/nvidia* permissions.",
}
_DEFAULT_HINT: Final = "Check the GPU with `nvidia-smi`."

#: The power bound of the counter check (`meter.devices.counters`) when NVML answers neither
#: the enforced nor the management power limit (every board with the energy counter should):
#: as high as the largest boards' limits so far (B200-class modules, about 1000 W), and the
#: check's margin doubles it.
DEFAULT_MAX_POWER_W: Final = 1000.0
#: Power limits above this are not believed (a driver answering garbage): the default is used.
_SANE_LIMIT_W: Final = 10_000.0


class NvmlGpu:
    """One CUDA-visible NVIDIA GPU, read through NVML. Implements `meter.devices.base.Device`.

    Opening probes once. With the energy counter (Volta and newer), `read` returns
    ``Reading(energy_j=...)``: joules since open, from ``nvmlDeviceGetTotalEnergyConsumption``.
    Without it, `read` returns ``Reading(power_w=...)``: the instantaneous power field
    ``NVML_FI_DEV_POWER_INSTANT`` where the driver has it, else ``nvmlDeviceGetPowerUsage``
    (a 1 s average on Ampere and newer). Open GPUs with `open_gpus` rather than directly.
    `read` is thread-safe; a failed read raises `DeviceError` naming the device.

    Every counter value is checked (`meter.devices.counters.CounterValidator`, kept as
    `validator`) against the board's power limit (``nvmlDeviceGetEnforcedPowerLimit`` at open,
    else ``nvmlDeviceGetPowerManagementLimit``, else `DEFAULT_MAX_POWER_W`; the highest settable
    limit too where NVML gives it, in case an administrator raises the limit mid-run). A value
    that steps back without restarting near zero, or jumps further than the limit allows, is
    not energy: `read` raises `meter.errors.BadReading` and the next read goes on from the last
    good value. A restart near zero (driver reload, GPU reset) counts what accrued since the
    restart. If the counter stops answering mid-run (NVML_ERROR_NOT_SUPPORTED or
    FUNCTION_NOT_FOUND), the GPU switches to power readings: `info` becomes a ``counter=False``
    `DeviceInfo` with a note saying when and why, that `read` raises
    `meter.errors.MethodChanged`, and later reads return ``Reading(power_w=...)``.

    ``clock`` times the counter reads (monotonic seconds): by default a simulated GPU's own
    clock (the fake NVML's ``simulation_clock``), else ``time.perf_counter``, as `meter.Meter`.
    """

    info: DeviceInfo
    #: The counter check, or None for a GPU opened without an energy counter.
    validator: CounterValidator | None

    def __init__(
        self,
        nvml: Any,
        visible: Visible,
        *,
        ordinal: int,
        counted: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Probe ``visible`` and open it as ``gpu:{ordinal}``; `DeviceError` if it cannot."""
        key = f"gpu:{ordinal}"
        self._nvml = nvml
        self._handle = visible.handle
        self._error: type[BaseException] = _nvml_error(nvml)
        self._lock = threading.Lock()
        self._closed = False
        self._label = f"{key} ({visible.name})" if visible.name else key
        self._key = key
        if visible.error is not None:
            raise self._unopenable(f"NVML index {visible.index}: {visible.error}", visible.error)

        notes: list[str] = []
        simulated = bool(getattr(nvml, "simulated", False))
        if simulated:
            notes.append("simulated GPU (meter.testing): its figures are not measurements")
            describe = getattr(nvml, "simulation_note", None)
            how = describe(self._handle) if callable(describe) else ""
            if how:
                notes.append(f"simulated GPU {how}")
        self._simulated = simulated
        if clock is None:  # a simulated board's own clock, where the fake NVML offers it
            clock_of = getattr(nvml, "simulation_clock", None)
            clock = clock_of(self._handle) if callable(clock_of) else None
        self._clock: Callable[[], float] = clock or time.perf_counter
        self._counter = False
        self._instant = False
        self.validator = None
        self._opened_t = self._clock()
        self._success = getattr(nvml, "NVML_SUCCESS", 0)
        # Built once: read() passes the same list every time.
        self._field_ids = [getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", 186)]
        try:
            try:
                energy_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            except self._error as error:
                if not self._unsupported(error):
                    raise
            else:
                self._counter = True
                # mJ -> J in the validator (units_per_j), which adds the integers exactly.
                self.validator = CounterValidator(
                    key,
                    energy_mj,
                    self._clock(),
                    max_power_w=self._max_power_w(),
                    units_per_j=1000,
                )
            if not self._counter:
                self._instant = self._instant_w() is not None
                if not self._instant:
                    nvml.nvmlDeviceGetPowerUsage(self._handle)
        except self._error as error:
            why = (
                f"{error}"
                if self._counter or not self._unsupported(error)
                else "it has neither an energy counter nor a power reading"
            )
            raise self._unopenable(why, error) from error
        if self._instant:
            notes.append(
                "no energy counter (NVML has one from Volta on): power from NVML's "
                "instantaneous field NVML_FI_DEV_POWER_INSTANT, integrated over time"
            )
        elif not self._counter:
            notes.append(
                "no energy counter (NVML has one from Volta on): power from "
                "nvmlDeviceGetPowerUsage, which is NVML's 1 s average on Ampere and newer, so "
                "windows shorter than a few seconds are smoothed"
            )
        if visible.mig_uuid is not None:
            notes.append(
                f"MIG instance {visible.mig_uuid}: NVML reports energy for the whole parent GPU "
                f"{visible.uuid}, so this is the parent's energy"
            )
        if visible.index != ordinal:
            notes.append(f"NVML index {visible.index} (gpu:{ordinal} is the CUDA ordinal)")
        if not counted:
            notes.append(
                "same physical GPU as an earlier gpu: listed, but not added to totals twice"
            )
        method: Method = "simulated" if simulated else "counter" if self._counter else "sampled"
        self.info = DeviceInfo(
            key=key,
            kind="gpu",
            method=method,
            counter=self._counter,
            model=visible.name,
            uuid=visible.uuid,
            index=visible.index,
            notes=tuple(notes),
            counted=counted,
        )

    def __repr__(self) -> str:
        return f"NvmlGpu({self.info.key!r}, model={self.info.model!r}, method={self.info.method!r})"

    def read(self) -> Reading:
        """Joules since open (counter GPUs) or watts now (the others)."""
        if self._closed:
            raise DeviceError(
                f"{self._label} was read after close(): open it again with open_gpus().",
                device=self.info.key,
            )
        nvml = self._nvml
        try:
            if self._counter:
                with self._lock:
                    if self._counter:  # not switched to power by another thread meanwhile
                        return self._read_counter()
            watts = self._instant_w() if self._instant else None
            if watts is None:
                watts = nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            return Reading(power_w=watts)
        except self._error as error:
            raise self._failed("failed", error) from error

    def close(self) -> None:
        """Stop using the GPU (NVML itself stays loaded for the others). Idempotent."""
        self._closed = True

    def _read_counter(self) -> Reading:
        """One counter read, checked (the caller holds the lock). The u64 mJ counter never
        wraps in practice, but restarts from 0 after a GPU reset or a driver reload, and a
        read can be wrong: `CounterValidator` tells them apart."""
        assert self.validator is not None
        try:
            mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._error as error:
            if self._unsupported(error):
                self._switch_to_power(error)
            raise
        verdict = self.validator.update(int(mj), self._clock())
        if not verdict.accepted:
            raise BadReading(verdict.message, device=self._key)
        if verdict.message:  # a restart or a rebase: energy goes on, but say so
            log.warning("meter: %s: %s", self._label, verdict.message)
        return Reading(energy_j=verdict.energy_j)

    def _switch_to_power(self, error: BaseException) -> NoReturn:
        """The counter stopped answering mid-run: power readings from now on. Raises
        `MethodChanged`, or the NVML error of the power probe (then nothing has changed and the
        next read tries again)."""
        instant = self._instant_w() is not None
        elapsed_s = max(self._clock() - self._opened_t, 0.0)
        wall = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        source = (
            "NVML_FI_DEV_POWER_INSTANT"
            if instant
            else "nvmlDeviceGetPowerUsage, a 1 s average on Ampere and newer"
        )
        note = (
            f"energy counter stopped answering mid-run ({error}) at {wall}, "
            f"{elapsed_s:.1f} s after open: power readings ({source}) integrated from then on"
        )
        self._instant = instant
        self._counter = False
        method: Method = "simulated" if self._simulated else "sampled"
        self.info = dataclasses.replace(
            self.info, method=method, counter=False, notes=(*self.info.notes, note)
        )
        log.warning("meter: %s: %s", self._label, note)
        raise MethodChanged(
            f"{self._label} {note}; the energy counted so far is kept", device=self._key
        ) from error

    def _max_power_w(self) -> float:
        """The highest power the board can draw, for the counter check: its enforced power
        limit, else its management limit, else `DEFAULT_MAX_POWER_W`; raised to the highest
        limit that can be set (``nvmlDeviceGetPowerManagementLimitConstraints``) where NVML
        gives it, so that a limit raised mid-run does not make true reads look implausible."""
        limits_w: list[float] = []
        for name in ("nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit"):
            watts = self._limit_w(name)
            if watts is not None:
                limits_w.append(watts)
                break
        constraints = getattr(self._nvml, "nvmlDeviceGetPowerManagementLimitConstraints", None)
        if callable(constraints):
            try:
                highest = float(constraints(self._handle)[1]) / 1000.0
            except (self._error, TypeError, ValueError, IndexError):
                pass
            else:
                if math.isfinite(highest) and 0 < highest <= _SANE_LIMIT_W:
                    limits_w.append(highest)
        return max(limits_w) if limits_w else DEFAULT_MAX_POWER_W

    def _limit_w(self, name: str) -> float | None:
        """A power limit in watts from NVML function ``name`` (mW), or None."""
        function = getattr(self._nvml, name, None)
        if not callable(function):
            return None
        try:
            watts = float(function(self._handle)) / 1000.0
        except (self._error, TypeError, ValueError):
            return None
        return watts if math.isfinite(watts) and 0 < watts <= _SANE_LIMIT_W else None

    def _instant_w(self) -> float | None:
        """Instantaneous watts from the NVML field, or None when the driver does not have it."""
        try:
            value = self._nvml.nvmlDeviceGetFieldValues(self._handle, self._field_ids)[0]
        except self._error as error:
            if self._unsupported(error):  # drivers that predate field values
                return None
            raise
        if value.nvmlReturn != self._success:
            return None
        member = _VALUE_MEMBER[value.valueType] if value.valueType < len(_VALUE_MEMBER) else "uiVal"
        return float(getattr(value.value, member)) / 1000.0

    def _unsupported(self, error: BaseException) -> bool:
        code = getattr(error, "value", None)
        nvml = self._nvml
        return code in (
            getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3),
            getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13),
        )

    def _hint(self, error: BaseException | None) -> str:
        code = getattr(error, "value", None)
        for name, hint in _HINTS.items():
            if code is not None and code == getattr(self._nvml, f"NVML_ERROR_{name}", None):
                return hint
        return _DEFAULT_HINT

    def _failed(self, what: str, error: BaseException) -> DeviceError:
        hint = self._hint(error)
        return DeviceError(f"{self._label} {what}: {error}. {hint}", device=self._key)

    def _unopenable(self, why: str, error: BaseException | None) -> DeviceUnavailable:
        hint = self._hint(error)
        reason = f"{self._label} could not be opened: {why}."
        return DeviceUnavailable(reason, device=self._key, fix=hint)


# -- the factory ----------------------------------------------------------------------------------


def open_gpus(
    *,
    nvml: Any | None = None,
    visible: str | Literal[_Env.FROM_ENV] | None = FROM_ENV,
    select: Sequence[int] | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[list[NvmlGpu], list[Unavailable], list[str]]:
    """Open the CUDA-visible GPUs: ``(devices, unavailable, warnings)``.

    ``nvml``: a pynvml-like module (default: the real one, `load_nvml`); it is initialised
    here. When NVML
    cannot be loaded the result is no devices and one `Unavailable` saying why and how to fix
    it, never an exception. ``visible``: a ``CUDA_VISIBLE_DEVICES`` value (default: the
    environment's; ``None`` means every GPU). ``select``: CUDA ordinals to open among the
    visible GPUs (default all); an unknown one raises `ConfigError` at once. A GPU that fails
    its probe comes back as `Unavailable` with the reason. ``clock``: what times the counter
    reads (`NvmlGpu`; default: a simulated GPU's own clock, else ``time.perf_counter``).

        >>> from meter.testing.nvml import FakeNVML, SimulatedGPU
        >>> fake = FakeNVML([SimulatedGPU(300.0), SimulatedGPU(250.0)])
        >>> gpus, unavailable, warnings = open_gpus(nvml=fake, visible="1")
        >>> [(g.info.key, g.info.index) for g in gpus]
        [('gpu:0', 1)]
    """
    if nvml is None:
        nvml, failure = _load()
    else:
        failure = _init(nvml)
    if nvml is None or failure is not None:
        reason, fix = failure or ("NVML could not be loaded.", _SIMULATE_HINT)
        return [], [Unavailable(key="gpu", kind="gpu", reason=reason, fix=fix)], []

    if visible is FROM_ENV:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus, warnings = resolve_visible(nvml, parse_visible_devices(visible))

    ordinals = list(range(len(gpus)))
    if select is not None:
        available = ", ".join(f"gpu:{i} ({g.name or g.uuid})" for i, g in enumerate(gpus))
        seen: set[int] = set()
        for ordinal in select:
            if isinstance(ordinal, bool) or not isinstance(ordinal, int) or ordinal in seen:
                raise ConfigError(
                    f"gpus={list(select)!r}: each entry must be a distinct integer CUDA ordinal "
                    f"(0 for cuda:0); the visible GPUs are {available or 'none'}.",
                    setting="gpus",
                )
            if not 0 <= ordinal < len(gpus):
                raise ConfigError(
                    f"gpus={list(select)!r}: there is no gpu:{ordinal}. "
                    + (
                        f"The visible GPUs are {available}: pick among ordinals "
                        f"{', '.join(map(str, ordinals))}, or leave gpus unset to meter them all."
                        if gpus
                        else "No GPU is visible (check CUDA_VISIBLE_DEVICES and `nvidia-smi`); "
                        "leave gpus unset to meter whatever is there."
                    ),
                    setting="gpus",
                )
            seen.add(ordinal)
        ordinals = list(select)

    devices: list[NvmlGpu] = []
    unavailable: list[Unavailable] = []
    metered: dict[int, str] = {}  # NVML index -> key of the first device metering it
    for ordinal in ordinals:
        gpu = gpus[ordinal]
        key = f"gpu:{ordinal}"
        counted = gpu.index not in metered
        if not counted:
            warnings.append(
                f"{key} ({gpu.mig_uuid or gpu.uuid}) is on the same physical GPU as "
                f"{metered[gpu.index]}: NVML meters the whole GPU, so its energy is reported "
                f"but not added to totals a second time."
            )
        try:
            device = NvmlGpu(nvml, gpu, ordinal=ordinal, counted=counted, clock=clock)
        except DeviceUnavailable as error:
            unavailable.append(
                Unavailable(key=key, kind="gpu", reason=error.reason, fix=error.fix, model=gpu.name)
            )
            continue
        metered.setdefault(gpu.index, key)
        devices.append(device)
    return devices, unavailable, warnings

"""Energy sources: NVIDIA GPUs (NVML), CPU package and DRAM (RAPL), and a labelled CPU estimate.

`discover` probes once what is present and returns what it found, what is present but
unusable (with the reason and the fix), and warnings. Nothing present is not an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meter import config
from meter.devices.base import METHODS, Device, DeviceInfo, Kind, Method, Reading, Unavailable

if TYPE_CHECKING:
    from meter.devices.estimate import CpuEstimate
    from meter.ranks import Ranks

log = logging.getLogger("meter")

__all__ = [
    "METHODS",
    "Device",
    "DeviceInfo",
    "Discovery",
    "Kind",
    "Method",
    "Reading",
    "Unavailable",
    "discover",
    "simulated_nvml",
]


#: The keys of the once-per-process warnings (`Discovery.once`) this process has logged.
_logged_once: set[str] = set()
_logged_once_lock = threading.Lock()


@dataclass
class Discovery:
    """What `discover` found: devices, the unusable ones with reason and fix, and warnings."""

    devices: list[Device] = field(default_factory=list)
    unavailable: list[Unavailable] = field(default_factory=list)
    #: Every warning of this discovery, whether or not `log_warnings` logs it.
    warnings: list[str] = field(default_factory=list)
    #: Facts worth a log line, such as which devices this rank of a distributed job chose.
    notes: list[str] = field(default_factory=list)
    #: Warnings of `warnings` to log once per process, however many discoveries make them (the
    #: CPU estimate's: a process that builds meters in a loop needs to hear it once): text -> key.
    once: dict[str, str] = field(default_factory=dict)

    def log_warnings(self, logger: logging.Logger = log) -> list[str]:
        """Log `warnings` at WARNING (``meter: ...``), each of `once` only if no discovery of
        this process has logged its key yet (later ones go to DEBUG). Returns what it logged.
        Thread-safe."""
        logged: list[str] = []
        for warning in self.warnings:
            key = self.once.get(warning)
            if key is not None:
                with _logged_once_lock:
                    first = key not in _logged_once
                    _logged_once.add(key)
                if not first:
                    logger.debug("meter: %s (shown once per process)", warning)
                    continue
            logger.warning("meter: %s", warning)
            logged.append(warning)
        return logged


def discover(
    *,
    gpus: Sequence[int] | None = None,
    cpu: bool = True,
    cpu_estimate: bool = True,
    cpu_tdp_w: float | None = None,
    rapl_root: str | os.PathLike[str] = "/sys/class/powercap",
    rapl_psys: bool = False,
    rapl_reader: Callable[[str], str] | None = None,
    nvml: Any = None,
    ranks: Ranks | None = None,
    clock: Callable[[], float] | None = None,
) -> Discovery:
    """Open every device this process should meter.

    GPUs: the NVML GPUs visible to this process (``CUDA_VISIBLE_DEVICES``), optionally a
    subset by ordinal (``gpus``). CPU: RAPL package and DRAM zones; if no CPU zone is readable
    and ``cpu_estimate`` is true, a psutil estimate labelled ``estimated`` (with a warning
    saying why and how to get measured figures).

    On one rank of a distributed job (``ranks``, by default read from ``LOCAL_RANK`` and
    ``WORLD_SIZE`` by `meter.ranks.from_env`), the rank meters only its own GPU unless ``gpus``
    is given, and only local rank 0 meters the CPU and DRAM (`meter.ranks.select` has the
    rules). The GPU's notes, `Discovery.notes` and an INFO log line say what the rank chose.

    ``clock`` (monotonic seconds; default ``time.perf_counter``) times the RAPL counter reads,
    which are checked against the time between them: pass the meter's clock when a test drives
    a fake RAPL tree on a fake clock. GPUs keep their own (a simulated GPU's clock, else
    ``time.perf_counter``): it is what moves a simulated counter.
    """
    from meter import ranks as rank_rules
    from meter.devices import nvml as nvml_devices

    found = Discovery()
    if nvml is None:
        nvml = simulated_nvml()
    if ranks is None:
        ranks = rank_rules.from_env()
    if ranks is not None and ranks.distributed:
        gpu_devices, gpu_unavailable, gpu_warnings, cpu = _open_rank_gpus(
            found, ranks, nvml=nvml, gpus=gpus, cpu=cpu
        )
    else:
        gpu_devices, gpu_unavailable, gpu_warnings = nvml_devices.open_gpus(nvml=nvml, select=gpus)
    found.devices.extend(gpu_devices)
    found.unavailable.extend(gpu_unavailable)
    found.warnings.extend(gpu_warnings)
    if cpu:
        from meter.devices.rapl import open_rapl

        zones, rapl_unavailable = open_rapl(
            rapl_root, psys=rapl_psys, reader=rapl_reader, clock=clock
        )
        found.devices.extend(zones)
        found.unavailable.extend(rapl_unavailable)
        if cpu_estimate and not any(z.info.kind == "cpu" for z in zones):
            from meter.devices.estimate import CpuEstimate

            estimate = CpuEstimate(cpu_tdp_w)
            found.devices.append(estimate)
            warning = _estimate_warning(estimate, [u for u in rapl_unavailable if u.kind == "cpu"])
            found.warnings.append(warning)
            found.once[warning] = "cpu-estimate"
    return found


def _estimate_warning(estimate: CpuEstimate, rapl: Sequence[Unavailable]) -> str:
    """The CPU-estimate warning: why RAPL is unusable, the fix, and how to set the TDP."""
    why = "; ".join(dict.fromkeys(u.reason for u in rapl)) or "no RAPL"
    fixes = "; ".join(dict.fromkeys(u.fix for u in rapl if u.fix))
    if estimate.tdp_basis == "given":
        tdp = f"TDP {estimate.tdp_w:g} W x utilisation"
        refine = ""
    else:
        tdp = f"TDP {estimate.tdp_w:g} W = {estimate.tdp_basis} x utilisation"
        refine = (
            " To refine the estimate, set METER_CPU_TDP_W (or Meter(cpu_tdp_w=...)) to your CPUs' "
            "rated power in watts, all sockets together."
        )
    measure = (
        f"To measure it instead: {fixes}" if fixes else "To measure it instead, make RAPL readable"
    )
    return (
        f"CPU energy is ESTIMATED ({tdp}), not measured: {why}. {measure} (README, section "
        f'"RAPL permissions").{refine}'
    )


def simulated_nvml() -> Any:
    """The fake NVML of the simulated GPUs in use, or None for the real GPUs: the one
    `meter.testing.simulated_gpus` installed, else one for ``METER_SIMULATE_GPUS`` (shared by
    every meter of the process; a bad value raises `ConfigError`). This is where simulated GPUs
    enter: the NVML device code never looks for them."""
    testing = sys.modules.get("meter.testing.nvml")  # nothing can be installed before import
    if testing is not None:
        installed = testing.installed_nvml()
        if installed is not None:
            return installed
    value = config.raw("METER_SIMULATE_GPUS")
    if value is None:
        return None
    from meter.testing.nvml import nvml_for_env

    return nvml_for_env(value)


def _open_rank_gpus(
    found: Discovery, ranks: Ranks, *, nvml: Any, gpus: Sequence[int] | None, cpu: bool
) -> tuple[Sequence[Device], list[Unavailable], list[str], bool]:
    """Open one rank's GPUs (`meter.ranks.select`); also says whether it meters the host."""
    from meter import ranks as rank_rules
    from meter.devices import nvml as nvml_devices

    if gpus is None:
        # Probe every visible GPU once to count them, then open only this rank's.
        every, missing, _ = nvml_devices.open_gpus(nvml=nvml)
        for device in every:
            device.close()
        visible = {d.info.key for d in every} | {u.key for u in missing if ":" in u.key}
        choice = rank_rules.select(
            ranks, visible_gpus=len(visible), cpu=cpu, cuda_device=rank_rules.torch_cuda_device()
        )
    else:
        missing = []
        choice = rank_rules.select(ranks, visible_gpus=0, cpu=cpu, gpus=list(gpus))
    found.notes.extend(choice.notes)
    found.warnings.extend(choice.warnings)
    for note in choice.notes:
        log.info("meter: %s", note)
    if choice.gpus is None:  # no GPU is visible: report why, as for a single process
        return [], missing, [], choice.cpu
    if not choice.gpus:
        return [], [], [], choice.cpu
    devices, unavailable, warnings = nvml_devices.open_gpus(nvml=nvml, select=choice.gpus)
    if choice.gpu_note is not None:
        for device in devices:
            notes = (*device.info.notes, choice.gpu_note)
            device.info = dataclasses.replace(device.info, notes=notes)
    return devices, unavailable, warnings, choice.cpu

"""Energy sources: NVIDIA GPUs (NVML), CPU package and DRAM (RAPL), and a labelled CPU estimate.

`discover` probes once what is present and returns what it found, what is present but
unusable (with the reason and the fix), and warnings. Nothing present is not an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meter.devices.base import METHODS, Device, DeviceInfo, Kind, Method, Reading, Unavailable

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
]


@dataclass
class Discovery:
    devices: list[Device] = field(default_factory=list)
    unavailable: list[Unavailable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
) -> Discovery:
    """Open every device this process should meter.

    GPUs: the NVML GPUs visible to this process (``CUDA_VISIBLE_DEVICES``), optionally a
    subset by ordinal (``gpus``). CPU: RAPL package and DRAM zones; if no CPU zone is readable
    and ``cpu_estimate`` is true, a psutil estimate labelled ``estimated`` (with a warning
    saying why and how to get measured figures).
    """
    from meter.devices import nvml as nvml_devices

    found = Discovery()
    gpu_devices, gpu_unavailable, gpu_warnings = nvml_devices.open_gpus(nvml=nvml, select=gpus)
    found.devices.extend(gpu_devices)
    found.unavailable.extend(gpu_unavailable)
    found.warnings.extend(gpu_warnings)
    if cpu:
        from meter.devices.rapl import open_rapl

        zones, rapl_unavailable = open_rapl(rapl_root, psys=rapl_psys, reader=rapl_reader)
        found.devices.extend(zones)
        found.unavailable.extend(rapl_unavailable)
        if cpu_estimate and not any(z.info.kind == "cpu" for z in zones):
            from meter.devices.estimate import DEFAULT_CPU_TDP_W, CpuEstimate

            estimate = CpuEstimate(DEFAULT_CPU_TDP_W if cpu_tdp_w is None else cpu_tdp_w)
            found.devices.append(estimate)
            why = "; ".join(u.reason for u in rapl_unavailable if u.kind == "cpu") or "no RAPL"
            found.warnings.append(
                f"CPU energy is ESTIMATED (TDP {estimate.tdp_w:g} W x utilisation), not "
                f"measured: {why}. Run `meter devices` for the fix."
            )
    return found

"""Embodied (manufacturing) emissions, amortised over a device's lifetime by the time it is used.

Defaults, with their sources (see ../shared/data/SOURCES.md):

* NVIDIA Hopper (H100, H200, GH200): 164 kgCO2e per GPU, from NVIDIA's product carbon footprint
  summary for the HGX H100 8-GPU board (about 1,312 kgCO2e cradle-to-gate / 8), the figure
  EcoLogits and Boavizta use, over a 3-year life. H200/GH200 use the H100 figure as a proxy.
* NVIDIA A100: 150 kgCO2e per GPU over 6 years (Luccioni et al., "Estimating the carbon
  footprint of BLOOM", arXiv 2211.02001). Chien et al. (HotCarbon '23) estimate 318 kgCO2e when
  the GPU's share of the server is included; override if you account that way.
* Any other GPU: 150 kgCO2e over 6 years (Luccioni et al.'s per-GPU figure).
* Host (CPU packages and the rest of the server: memory, board, chassis): 2,500 kgCO2e per
  server over 6 years (Luccioni et al.), split evenly over the CPU sockets metered. DRAM zones
  carry none of their own (they are part of that server figure).

Override per device key or kind: ``Meter(embodied={"gpu:0": (200.0, 4.0), "cpu": (1200.0, 5)})``
(kgCO2e, years), or ``embodied=False`` to leave embodied emissions out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meter.devices.base import DeviceInfo
from meter.errors import ConfigError

SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass(frozen=True)
class Embodied:
    """Manufacturing footprint of one device and the life it is amortised over."""

    kg_co2e: float
    lifetime_years: float
    source: str

    @property
    def g_per_s(self) -> float:
        return self.kg_co2e * 1000.0 / (self.lifetime_years * SECONDS_PER_YEAR)


HOPPER = Embodied(164.0, 3.0, "NVIDIA HGX H100 PCF / 8 GPUs (EcoLogits, Boavizta), 3-year life")
A100 = Embodied(150.0, 6.0, "Luccioni et al. 2022 (BLOOM), per GPU, 6-year life")
GPU = Embodied(150.0, 6.0, "Luccioni et al. 2022 (BLOOM), per GPU, 6-year life (generic GPU)")
SERVER = Embodied(2500.0, 6.0, "Luccioni et al. 2022 (BLOOM), per server, 6-year life")


def default_for(info: DeviceInfo, sockets: int) -> Embodied | None:
    """The default embodied footprint of a device (None: nothing of its own)."""
    model = info.model.upper()
    if info.kind == "gpu":
        if any(tag in model for tag in ("H100", "H200", "GH200", "H800")):
            return HOPPER
        if "A100" in model or "A800" in model:
            return A100
        return GPU
    if info.kind == "cpu":
        share = SERVER.kg_co2e / max(sockets, 1)
        return Embodied(share, SERVER.lifetime_years, f"{SERVER.source}, 1/{sockets} per socket")
    return None


def check_override(key: str, value: object) -> Embodied:
    if isinstance(value, Embodied):
        return value
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
        and value[0] >= 0
        and value[1] > 0
    ):
        return Embodied(float(value[0]), float(value[1]), "configured")
    raise ConfigError(
        f"embodied[{key!r}] must be (kgCO2e >= 0, lifetime in years > 0), e.g. (164.0, 3.0); "
        f"got {value!r}",
        setting="embodied",
    )


def resolve(
    infos: Sequence[DeviceInfo], overrides: Mapping[str, object] | None
) -> dict[str, Embodied]:
    """Embodied footprint per device key: overrides by key, then by kind, then defaults."""
    overrides = dict(overrides or {})
    keys = {i.key for i in infos}
    kinds = {i.kind for i in infos}
    for name in overrides:
        if name not in keys and name not in kinds and name not in ("gpu", "cpu", "dram", "psys"):
            raise ConfigError(
                f"embodied names {name!r}, which is neither a device of this meter "
                f"({', '.join(sorted(keys)) or 'none'}) nor a kind (gpu, cpu, dram)",
                setting="embodied",
            )
    sockets = sum(1 for i in infos if i.kind == "cpu")
    out: dict[str, Embodied] = {}
    for info in infos:
        if not info.counted:
            continue
        if info.key in overrides:
            out[info.key] = check_override(info.key, overrides[info.key])
        elif info.kind in overrides:
            out[info.key] = check_override(info.kind, overrides[info.kind])
        else:
            default = default_for(info, sockets)
            if default is not None:
                out[info.key] = default
    return out

"""Optional corrections of NVIDIA power-sensor gain and offset, per GPU family.

NVIDIA's board power sensors read a few percent off. Yang et al. (SC'24, "Accurate and
Convenient Energy Measurements for GPUs", arXiv 2312.02741; their GPU_Power_Benchmark data,
commit 4b5c944) fitted ``reading = gain x true + offset`` against an external meter over several
steady load levels:

======== ====== ========= =========================================================
family   gain   offset    board they measured
======== ====== ========= =========================================================
a100     0.954  -1.18 W   A100-PCIe-40GB, driver 535
rtx3090  0.948  +1.4 W    RTX 3090 (EVGA), power.draw.instant
rtx4090  1.045  -22.6 W   RTX 4090
rtxa5000 0.908  +6.3 W    RTX A5000, power.draw.instant
======== ====== ========= =========================================================

No such figure exists for H100 or any other family here, so they are never corrected. A
correction inverts the fit, ``true = (reading - offset) / gain``; over a window that is
``(energy - offset x duration) / gain``. It is one board's figure applied to every board of the
family, so it is **off by default**: ``Meter(gpu_correction="auto")`` (or a family name, or
``METER_GPU_CORRECTION``) turns it on, and every corrected figure carries a note saying so.
On the recordings beside an external meter (BENCHMARKS.md, "Against an external power meter"),
meter at 10 Hz over the whole A100 step load goes from 5.5 % low to 0.1 %, and the RTX 3090,
4090 and A5000 1 s windows from 4.9-15 % to 0.8-2.8 % (median); but on the A100 square wave, where
the part-time sensor happened to over-weight the load and so cancelled its own gain error, the
whole recording goes from 0.3 % to 5.5 % off. A fit is not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from meter.errors import ConfigError

__all__ = ["CORRECTIONS", "SensorCorrection", "correction_for", "resolve_correction"]

_SOURCE = "Yang et al., SC'24 (arXiv 2312.02741), GPU_Power_Benchmark 4b5c944"


@dataclass(frozen=True)
class SensorCorrection:
    """Undo one family's sensor gain and offset: ``true = (reading - offset_w) / gain``."""

    family: str
    gain: float
    offset_w: float
    source: str = _SOURCE

    def power_w(self, reading_w: float) -> float:
        return max((reading_w - self.offset_w) / self.gain, 0.0)

    def energy_j(self, reading_j: float, seconds: float) -> float:
        """Joules over ``seconds`` from the joules the sensor reported over them."""
        return max((reading_j - self.offset_w * seconds) / self.gain, 0.0)

    @property
    def note(self) -> str:
        return (
            f"corrected for the {self.family} sensor's gain {self.gain:g} and offset "
            f"{self.offset_w:+g} W ({self.source}): (reading - offset) / gain"
        )


CORRECTIONS: dict[str, SensorCorrection] = {
    "a100": SensorCorrection("a100", 0.954, -1.18),
    "rtx3090": SensorCorrection("rtx3090", 0.948, 1.4),
    "rtx4090": SensorCorrection("rtx4090", 1.045, -22.6),
    "rtxa5000": SensorCorrection("rtxa5000", 0.908, 6.3),
}

_HINTS = (("a100", "a100"), ("3090", "rtx3090"), ("4090", "rtx4090"), ("a5000", "rtxa5000"))


def correction_for(model: str) -> SensorCorrection | None:
    """The correction for a GPU model name (``NVIDIA A100-PCIE-40GB``), None when no figure
    exists for its family."""
    text = model.lower().replace(" ", "")
    for hint, family in _HINTS:
        if hint in text:
            return CORRECTIONS[family]
    return None


def resolve_correction(setting: str | None, model: str) -> SensorCorrection | None:
    """What ``gpu_correction`` asks for one GPU: None/"" or "off" (nothing), "auto" (by its
    model name, None when its family has no figure) or a family name (forced). A bad value
    raises `ConfigError`."""
    if setting is None:
        return None
    key = setting.strip().lower()
    if key in ("", "off", "none", "0", "false", "no"):
        return None
    if key == "auto":
        return correction_for(model)
    correction = CORRECTIONS.get(key)
    if correction is None:
        raise ConfigError(
            f"gpu_correction={setting!r} is not a GPU family with a published sensor fit: use "
            f"'auto' (by each GPU's model name), one of {', '.join(CORRECTIONS)}, or 'off'",
            setting="gpu_correction",
        )
    return correction

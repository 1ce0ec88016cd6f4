"""How a simulated board's power sensor turns its true power into what NVML publishes.

Real boards do not publish the power they draw. Yang et al. (SC'24, "Accurate and Convenient
Energy Measurements for GPUs", arXiv 2312.02741; raw data in the authors' GPU_Power_Benchmark
repository, commit 4b5c944, ``Overall_Results.xlsx``) measured, against an external meter:

* a new *instantaneous* reading only every ~100 ms (20 ms on Volta and Pascal);
* each reading averages only the **last 25 ms** of its 100 ms period on A100 and H100 (about
  10 of 20 ms on V100 and Pascal, the whole period on Turing, Ampere consumer boards and Ada):
  what the board drew in the other 75 % is never seen;
* a delay between a load change and the readings that follow it;
* a gain and offset error of a few percent (A100: gain 0.954, -1.18 W; RTX 3090 0.948, +1.4 W;
  RTX A5000 0.908, +6.3 W; RTX 4090 1.045, -22.6 W);
* ``nvmlDeviceGetPowerUsage`` (nvidia-smi ``power.draw``): a 1 s average of the readings on
  Ampere consumer boards, Ada and Hopper with drivers from 535 on, but the instantaneous
  reading itself on GA100 (A100) and Turing.

`Sensor` holds those parameters and `SENSORS` the presets; `SimulatedGPU(sensor=...)` applies
them. The model, for publication times ``s_k = phase + k * update_s``:

* instantaneous field (``NVML_FI_DEV_POWER_INSTANT``) from ``s_k`` until ``s_{k+1}``:
  ``gain * mean(true power over [s_k - delay_s - window_s, s_k - delay_s]) + offset_w``;
* ``nvmlDeviceGetPowerUsage``: the mean of the readings published in the last ``average_s``;
* energy counter: either ``counter="exact"``, the integral of ``gain * true + offset`` (delayed
  by ``delay_s``), or ``counter="sensor"``, the integral of the published readings held from
  one to the next (so it misses what the part-time window misses). **Which real boards do
  which is not known here**: the recordings have no counter, the authors' repository never
  reads it, and no GPU has been lent to check. Both are offered; the presets use ``exact``.

``update_s = 0`` means a continuous sensor (a reading at every instant): with ``window_s = 0``,
no delay, gain 1 and no offset that is the ``ideal`` preset, the simulator's old behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["DEFAULT_SENSOR", "SENSORS", "Sensor", "sensor_for_model", "sensor_preset"]

CounterMode = Literal["exact", "sensor"]


@dataclass(frozen=True)
class Sensor:
    """The parameters of one board's power sensor (see the module docstring for the model).

    >>> SENSORS["a100"].window_s, SENSORS["a100"].update_s
    (0.025, 0.101)
    """

    name: str = "custom"
    #: Seconds between two instantaneous readings (0: a reading at every instant).
    update_s: float = 0.1
    #: Seconds of true power each reading averages, at the end of its period (<= update_s).
    window_s: float = 0.025
    #: Seconds between the end of the averaged window and the reading's publication.
    delay_s: float = 0.0
    #: reading = gain x true + offset_w.
    gain: float = 1.0
    offset_w: float = 0.0
    #: nvmlDeviceGetPowerUsage averages the readings of this many seconds (<= update_s: it is
    #: the instantaneous reading itself, as on A100).
    average_s: float = 1.0
    #: The energy counter: the exact integral, or the integral of the part-time readings.
    counter: CounterMode = "exact"
    #: Where the figures come from.
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("update_s", "window_s", "delay_s", "average_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"Sensor {name} must be a finite number of seconds >= 0, got {value!r}"
                )
        if self.update_s > 0 and self.window_s > self.update_s:
            raise ValueError(
                f"Sensor window_s ({self.window_s}) cannot exceed update_s ({self.update_s}): "
                "a reading averages part (or all) of its own period"
            )
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"Sensor gain must be > 0, got {self.gain!r}")
        if not math.isfinite(self.offset_w):
            raise ValueError(f"Sensor offset_w must be finite watts, got {self.offset_w!r}")
        if self.counter not in ("exact", "sensor"):
            raise ValueError(f"Sensor counter must be 'exact' or 'sensor', got {self.counter!r}")

    @property
    def ideal(self) -> bool:
        """True when what NVML publishes is the true power itself."""
        return (
            self.update_s == 0
            and self.window_s == 0
            and self.delay_s == 0
            and self.gain == 1.0
            and self.offset_w == 0.0
        )

    @property
    def coverage(self) -> float:
        """Fraction of the time the readings see (1 for a continuous sensor)."""
        return 1.0 if self.update_s == 0 else self.window_s / self.update_s

    def with_counter(self, counter: CounterMode) -> Sensor:
        """The same sensor with the other energy-counter model."""
        return replace(self, counter=counter)


_PAPER = "Yang et al., SC'24 (arXiv 2312.02741) and their GPU_Power_Benchmark data (4b5c944)"
_FIT = (
    "fitted to ../shared/data/gpu-power-traces by `benchmarks/bench_traces.py --fit` "
    "(least squares of the modelled against the recorded readings)"
)

#: The presets. Gains and offsets are the authors' steady-state fits against their external
#: meter (over several load levels); windows and update periods their boxcar fits, checked
#: against the recordings here, which also give the delay: fitted, the readings need no delay
#: beyond waiting for the next publication (0 ms within the recordings' 2 ms resolution). The
#: authors' "delay" (load step to the 50 % point of the reading: 17 ms on their A100, 23-311 ms
#: on H100s) includes that wait, which this model produces by itself.
#:
#: Fitted here (`bench_traces.py --fit`, see BENCHMARKS.md): A100 101.2 ms update, 25.0 ms
#: window (square wave and step load alike), gain 0.958, -2.1 W; RTX 3090 instant 100 ms, full
#: window, 0.952, -0.7 W; RTX 4090 100 ms, 95 ms window, 1.047, -21.6 W; RTX A5000 instant
#: 100 ms, full window, 0.937, -0.8 W; the 1 s ``power.draw`` of the 3090 and A5000 is the mean
#: of the last second of instantaneous readings (5.6 W RMS).
SENSORS: dict[str, Sensor] = {
    "ideal": Sensor(
        name="ideal",
        update_s=0.0,
        window_s=0.0,
        source="no sensor effects: NVML publishes the true power (the simulator before issue 10)",
    ),
    "h100": Sensor(
        name="h100",
        update_s=0.1,
        window_s=0.025,
        average_s=1.0,
        source=(
            f"{_PAPER}: ten H100 PCIe, 100 ms updates, 21-25 ms window, power.draw a 1 s "
            "average. No external meter was put on an H100 there, so gain and offset are "
            "unknown and left at 1 and 0"
        ),
    ),
    "a100": Sensor(
        name="a100",
        update_s=0.101,
        window_s=0.025,
        gain=0.954,
        offset_w=-1.18,
        average_s=0.101,
        source=(
            f"{_PAPER}: A100-PCIe-40GB, 25 ms window, gain 0.954 and -1.18 W; power.draw is the "
            f"instantaneous reading on GA100 (identical in the recordings); 101 ms updates {_FIT}"
        ),
    ),
    "rtx3090": Sensor(
        name="rtx3090",
        update_s=0.1,
        window_s=0.1,
        gain=0.948,
        offset_w=1.4,
        average_s=1.0,
        source=(
            f"{_PAPER}: RTX 3090, 100 ms updates, 100 ms window (power.draw.instant), gain "
            "0.948 and +1.4 W, power.draw a 1 s average"
        ),
    ),
    "rtx4090": Sensor(
        name="rtx4090",
        update_s=0.1,
        window_s=0.1,
        gain=1.045,
        offset_w=-22.6,
        average_s=0.1,
        source=(
            f"{_PAPER}: RTX 4090, 100 ms updates, ~100-110 ms window, gain 1.045 and -22.6 W; "
            "the recording's power.draw is the instantaneous reading (a driver-530 behaviour)"
        ),
    ),
    "rtxa5000": Sensor(
        name="rtxa5000",
        update_s=0.1,
        window_s=0.1,
        gain=0.908,
        offset_w=6.3,
        average_s=1.0,
        source=(
            f"{_PAPER}: RTX A5000, 100 ms updates, 80-99 ms window (100 ms {_FIT}), gain 0.908 "
            "and +6.3 W (power.draw.instant), power.draw a 1 s average"
        ),
    ),
}

#: What simulated GPUs use unless told otherwise.
DEFAULT_SENSOR = "h100"

_MODEL_HINTS = (
    ("h100", "h100"),
    ("a100", "a100"),
    ("3090", "rtx3090"),
    ("4090", "rtx4090"),
    ("a5000", "rtxa5000"),
)


def sensor_preset(name: str | Sensor) -> Sensor:
    """The preset called ``name`` (``h100``, ``a100``, ``rtx3090``, ``rtx4090``, ``rtxa5000``,
    ``ideal``); a `Sensor` is returned as is. An unknown name raises ValueError listing them."""
    if isinstance(name, Sensor):
        return name
    key = str(name).strip().lower()
    sensor = SENSORS.get(key)
    if sensor is None:
        raise ValueError(f"unknown sensor preset {name!r}: use one of {', '.join(SENSORS)}")
    return sensor


def sensor_for_model(model: str) -> Sensor:
    """The preset whose GPU family appears in ``model`` (e.g. a recording folder "A100" or
    "NVIDIA GeForce RTX 3090"); the default (H100-like) preset when none does."""
    text = model.lower().replace(" ", "")
    for hint, preset in _MODEL_HINTS:
        if hint in text:
            return SENSORS[preset]
    return SENSORS[DEFAULT_SENSOR]

"""meter: live energy and carbon metering for GPU training and inference.

>>> import meter
>>> with meter.measure("epoch") as w:      # doctest: +SKIP
...     train_one_epoch()
>>> print(w.result.energy_j, w.result.devices["gpu:0"].method)  # doctest: +SKIP
"""

from meter.core import DEFAULT_INTERVAL_S, Meter, get_meter, measure, set_meter
from meter.devices.base import DeviceInfo, Reading, Unavailable
from meter.errors import ConfigError, DeviceError, DeviceUnavailable, MeterError
from meter.measurement import DeviceMeasurement, Measurement
from meter.windows import Group, Window

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_INTERVAL_S",
    "ConfigError",
    "DeviceError",
    "DeviceInfo",
    "DeviceMeasurement",
    "DeviceUnavailable",
    "Group",
    "Measurement",
    "Meter",
    "MeterError",
    "Reading",
    "Unavailable",
    "Window",
    "__version__",
    "get_meter",
    "measure",
    "set_meter",
]

"""The errors `meter` raises. One base class, a few subclasses with structured fields.

Every message says what failed and how to fix it.
"""

from __future__ import annotations


class MeterError(Exception):
    """Base class of every error raised by `meter`."""


class ConfigError(MeterError, ValueError):
    """Bad configuration from the user, raised at setup (never mid-run).

    ``setting`` names the option at fault (``interval_s``, ``gpus``, ``METER_SIMULATE_GPUS``...).
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DeviceError(MeterError):
    """A device could not be opened or read. ``device`` is its key (``gpu:0``, ``cpu:0``)."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device


class DeviceUnavailable(DeviceError):
    """A device exists but cannot be read here; ``fix`` says what would make it readable."""

    def __init__(self, message: str, *, device: str | None = None, fix: str | None = None) -> None:
        super().__init__(message, device=device)
        self.fix = fix

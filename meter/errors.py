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
    """A device exists but cannot be read here. ``reason`` says why, ``fix`` what would make it
    readable; the message joins both."""

    def __init__(self, reason: str, *, device: str | None = None, fix: str | None = None) -> None:
        super().__init__(reason if fix is None else f"{reason}. To fix: {fix}", device=device)
        self.reason = reason
        self.fix = fix

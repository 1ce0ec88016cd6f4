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


class BadReading(DeviceError):
    """A device answered, but with a value that cannot be true: an energy counter that stepped
    back without restarting near zero, or that jumped by more than the board's power limit
    allows in the time since the last read. The read is ignored (never turned into energy),
    counted and flagged on the windows it falls in; the device stays in use."""


class MethodChanged(DeviceError):
    """The device changed how it measures (its energy counter stopped answering mid-run, so
    it now returns power readings): ``device.info`` holds the new method. Readers take the
    new info and read again; energy so far is kept."""

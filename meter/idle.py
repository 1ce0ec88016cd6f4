"""Idle power baselines: measured by `meter calibrate`, kept in a small JSON file.

A device's idle power gives its *dynamic* energy, ``energy - idle power x duration``, reported
beside the gross figure. GPUs are matched by UUID, host devices by host name and key.

A baseline is only as good as the idleness it was measured in: `cpu_busy_percent` says how busy
the CPUs were meanwhile (``meter calibrate`` saves nothing above `BUSY_CPU_PERCENT` unless
forced), and baselines of simulated GPUs never go to the default file (`save` refuses).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meter import config
from meter.devices.base import DeviceInfo
from meter.errors import ConfigError

log = logging.getLogger("meter")

#: System-wide CPU utilisation, in percent of all logical CPUs, above which a calibration is
#: not an idle measurement: an idle server or desktop sits at a few percent (the OS, agents,
#: meter's own 10 Hz sampler well under 1 %), while one busy core of an 8-CPU machine is 12.5 %.
BUSY_CPU_PERCENT = 10.0


def cpu_busy_percent(
    before: Mapping[str, float], after: Mapping[str, float], own_s: float = 0.0
) -> float | None:
    """System CPU utilisation in percent between two ``psutil.cpu_times()._asdict()``, less
    ``own_s`` CPU seconds (the calibrating process's own); None when no tick passed.

    Counted as psutil's ``cpu_percent`` and ``top`` do: idle and iowait are not busy; guest time
    is already inside user and nice on Linux (kernel/sched/cputime.c), so it leaves the total;
    a field that steps back (psutil issues #392, #645, #1210) counts as zero.

    >>> cpu_busy_percent({"user": 10.0, "idle": 90.0}, {"user": 13.0, "idle": 99.0})
    25.0
    >>> cpu_busy_percent({"user": 10.0, "idle": 90.0}, {"user": 13.0, "idle": 99.0}, own_s=1.2)
    15.0
    """
    delta = {name: max(after[name] - before.get(name, 0.0), 0.0) for name in after}
    total = sum(delta.values()) - delta.get("guest", 0.0) - delta.get("guest_nice", 0.0)
    if total <= 0:
        return None
    idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
    busy = total - idle - max(own_s, 0.0)
    return min(max(100.0 * busy / total, 0.0), 100.0)


def default_path() -> Path:
    """``$METER_IDLE_FILE``, else ``$XDG_CONFIG_HOME/meter/idle.json`` (``~/.config``)."""
    env = config.raw("METER_IDLE_FILE")
    if env is not None:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.join(
        os.path.expanduser("~"), ".config"
    )
    return Path(base) / "meter" / "idle.json"


def identity(info: DeviceInfo) -> str:
    """Stable identity of a device across runs: the GPU UUID, else host and key."""
    if info.uuid:
        return info.uuid
    import socket

    return f"{socket.gethostname()}/{info.key}"


def load(
    infos: Sequence[DeviceInfo], path: str | os.PathLike[str] | None = None
) -> dict[str, float]:
    """Idle watts per device key for the devices found in the file (missing file: none)."""
    p = Path(path) if path is not None else default_path()
    try:
        data = json.loads(p.read_text())
        entries = data.get("devices", {})
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        log.warning(
            "meter: ignoring unreadable idle-power file %s (%s); rerun `meter calibrate`", p, exc
        )
        return {}
    out: dict[str, float] = {}
    for info in infos:
        entry = entries.get(identity(info))
        if isinstance(entry, dict) and isinstance(entry.get("idle_power_w"), (int, float)):
            out[info.key] = float(entry["idle_power_w"])
    return out


def save(
    infos: Sequence[DeviceInfo],
    watts: dict[str, float],
    seconds: float,
    path: str | os.PathLike[str] | None = None,
    *,
    cpu_busy: float | None = None,
) -> Path:
    """Merge measured idle watts into the file, atomically (write a temp file, then rename).

    ``cpu_busy``: the CPU utilisation (percent) measured meanwhile, kept with each entry. The
    baselines of simulated GPUs (method ``simulated``) are refused without an explicit ``path``:
    in the default file they would stand for the real devices' idle power.
    """
    import tempfile  # only `meter calibrate` writes; keep `import meter` light

    if path is None and any(i.method == "simulated" and i.key in watts for i in infos):
        raise ConfigError(
            f"the idle power of simulated GPUs is not saved to the idle file {default_path()}; "
            "give another file (`meter calibrate --idle-file PATH`), or unset "
            "METER_SIMULATE_GPUS to calibrate the real devices",
            setting="METER_SIMULATE_GPUS",
        )
    p = Path(path) if path is not None else default_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        data: dict[str, Any] = json.loads(p.read_text())
        if not isinstance(data.get("devices"), dict):
            data = {"devices": {}}
    except (OSError, ValueError):
        data = {"devices": {}}
    data["version"] = 1
    for info in infos:
        if info.key in watts:
            data["devices"][identity(info)] = {
                "key": info.key,
                "model": info.model,
                "method": info.method,
                "idle_power_w": round(watts[info.key], 3),
                "seconds": round(seconds, 3),
                **({} if cpu_busy is None else {"cpu_busy_percent": round(cpu_busy, 1)}),
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
    fd, tmp = tempfile.mkstemp(prefix=".idle-", dir=str(p.parent))
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p

"""Idle power baselines: measured by `meter calibrate`, kept in a small JSON file.

A device's idle power gives its *dynamic* energy, ``energy - idle power x duration``, reported
beside the gross figure. GPUs are matched by UUID, host devices by host name and key.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meter import config
from meter.devices.base import DeviceInfo

log = logging.getLogger("meter")


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
) -> Path:
    """Merge measured idle watts into the file, atomically (write a temp file, then rename)."""
    import tempfile  # only `meter calibrate` writes; keep `import meter` light

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

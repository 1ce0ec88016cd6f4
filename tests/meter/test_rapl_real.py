"""RAPL on the real powercap files (marker ``rapl``; skipped where they cannot be read)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meter.devices.rapl import open_rapl

ENERGY = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def _skip_reason() -> str | None:
    try:
        ENERGY.read_text()
    except FileNotFoundError:
        return f"no {ENERGY}: no RAPL here (not Linux, a VM, or intel_rapl_common not loaded)"
    except PermissionError:
        return (
            f"{ENERGY} is root-only (Linux >= 5.10, CVE-2020-8694): "
            "sudo chmod -R a+r /sys/class/powercap/intel-rapl, or run as root"
        )
    except OSError as e:
        return f"{ENERGY} cannot be read: {e}"
    return None


@pytest.mark.rapl
def test_real_zones_count_plausible_energy() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    zones, unavailable = open_rapl()
    try:
        assert "cpu:0" in [z.info.key for z in zones], unavailable
        before = {z.info.key: z.read().energy_j for z in zones}
        t0 = time.perf_counter()
        time.sleep(0.5)
        after = {z.info.key: z.read().energy_j for z in zones}
        elapsed_s = time.perf_counter() - t0
        for zone in zones:
            key = zone.info.key
            e0, e1 = before[key], after[key]
            assert e0 is not None and e1 is not None
            assert e0 >= 0.0
            assert e1 >= e0
            power_w = (e1 - e0) / elapsed_s
            assert 0.0 <= power_w <= 1000.0, f"{key}: {power_w:.1f} W"
        package_j = after["cpu:0"]
        assert package_j is not None and package_j > 0.0, "package 0 used no energy in 0.5 s"
    finally:
        for zone in zones:
            zone.close()

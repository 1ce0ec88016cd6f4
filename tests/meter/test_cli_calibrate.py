"""`meter calibrate` keeps simulated baselines out of the real idle file and saves no "idle"
figure measured on a busy machine (issue 13, item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meter import idle
from meter.devices.base import DeviceInfo
from meter.errors import ConfigError
from tests.meter.test_cli import env, meter_cmd


def calibrate(*args: str, home: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """``meter calibrate`` with the default idle file under ``home`` (no METER_IDLE_FILE)."""
    e = env(XDG_CONFIG_HOME=str(home), **env_vars)
    del e["METER_IDLE_FILE"]
    return subprocess.run(
        meter_cmd("calibrate", "--seconds", "0.3", *args),
        env=e,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_simulated_gpus_are_not_saved_to_the_idle_file(tmp_path):
    default = tmp_path / "meter" / "idle.json"
    proc = calibrate("--force", home=tmp_path, METER_SIMULATE_GPUS="80", METER_NO_CPU="1")
    assert proc.returncode == 2
    assert "METER_SIMULATE_GPUS" in proc.stderr and "--idle-file" in proc.stderr
    assert str(default) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not default.exists()


def test_simulated_gpus_go_to_an_explicit_idle_file(tmp_path):
    own = tmp_path / "simulated-idle.json"
    proc = calibrate(
        "--force", "--idle-file", str(own), home=tmp_path,
        METER_SIMULATE_GPUS="80", METER_NO_CPU="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(own.read_text())["devices"].values()
    assert entry["method"] == "simulated" and abs(entry["idle_power_w"] - 80.0) < 2.0
    assert "cpu_busy_percent" in entry
    assert not (tmp_path / "meter" / "idle.json").exists()


@pytest.fixture
def busy_core() -> Iterator[None]:
    """One CPU kept fully busy by another process."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spin.kill()
        spin.wait()


def test_a_busy_machine_is_not_calibrated(tmp_path, busy_core):
    # One busy core of N is 100/N % of the machine: over a threshold of 0 on any machine.
    own = tmp_path / "idle.json"
    proc = calibrate(
        "--max-cpu-percent", "0", "--idle-file", str(own), home=tmp_path,
        METER_SIMULATE_GPUS="80", METER_NO_CPU="1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "busy" in proc.stderr and "--force" in proc.stderr and "not saved" in proc.stderr
    assert "gpu:0" in proc.stdout  # the figures are still shown
    assert not own.exists()


def test_force_saves_a_busy_calibration_with_a_warning(tmp_path, busy_core):
    own = tmp_path / "idle.json"
    proc = calibrate(
        "--max-cpu-percent", "0", "--force", "--idle-file", str(own), home=tmp_path,
        METER_SIMULATE_GPUS="80", METER_NO_CPU="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "busy" in proc.stderr and "--force" in proc.stderr
    (entry,) = json.loads(own.read_text())["devices"].values()
    assert entry["cpu_busy_percent"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
        (["--max-cpu-percent", "120"], "--max-cpu-percent"),
    ],
)
def test_bad_calibrate_flags(tmp_path, args, message):
    proc = calibrate(*args, home=tmp_path, METER_SIMULATE_GPUS="80")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("before", "after", "own_s", "busy"),
    [
        ({"user": 10.0, "idle": 90.0}, {"user": 13.0, "idle": 99.0}, 0.0, 25.0),
        ({"user": 10.0, "idle": 90.0}, {"user": 13.0, "idle": 99.0}, 1.2, 15.0),
        ({"user": 10.0, "idle": 90.0}, {"user": 13.0, "idle": 99.0}, 9.0, 0.0),
        # iowait is not busy; guest is inside user already; a field stepping back counts 0
        (
            {"user": 0.0, "idle": 0.0, "iowait": 0.0, "guest": 0.0, "system": 5.0},
            {"user": 4.0, "idle": 4.0, "iowait": 2.0, "guest": 2.0, "system": 4.0},
            0.0,
            40.0,
        ),
        ({"user": 1.0, "idle": 1.0}, {"user": 1.0, "idle": 1.0}, 0.0, None),
    ],
)
def test_cpu_busy_percent(before, after, own_s, busy):
    assert idle.cpu_busy_percent(before, after, own_s) == pytest.approx(busy)


def test_save_refuses_simulated_baselines_without_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("METER_IDLE_FILE", str(tmp_path / "idle.json"))
    gpu = DeviceInfo(key="gpu:0", kind="gpu", method="simulated", counter=True, uuid="GPU-x")
    with pytest.raises(ConfigError, match="METER_SIMULATE_GPUS"):
        idle.save([gpu], {"gpu:0": 80.0}, 1.0)
    assert not os.path.exists(tmp_path / "idle.json")
    idle.save([gpu], {"gpu:0": 80.0}, 1.0, tmp_path / "own.json")  # an explicit path is fine
    assert (tmp_path / "own.json").exists()

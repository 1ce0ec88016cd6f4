"""The `meter` command, run for real as a subprocess on simulated GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from meter.exporters.jsonl import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def meter_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "meter", *args]


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["METER_IDLE_FILE"] = "/nonexistent/idle.json"
    e.update(extra)
    return e


def run_meter(*args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        meter_cmd(*args), env=env(**env_vars), capture_output=True, text=True, timeout=60
    )


def test_run_meters_a_simulated_gpu_within_3pct(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run_meter(
        "run",
        "--output",
        str(out),
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(1)",
        METER_SIMULATE_GPUS="300",
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = list(read_jsonl(out))
    gpu = rec["devices"]["gpu:0"]
    assert gpu["method"] == "simulated"
    assert rec["duration_s"] >= 1.0
    assert abs(gpu["energy_j"] - 300.0 * rec["duration_s"]) / (300.0 * rec["duration_s"]) < 0.03
    assert rec["exit_code"] == 0
    assert rec["command"][-1] == "import time; time.sleep(1)"
    # The summary table goes to stderr, with the method column and the simulated note.
    assert "gpu:0" in proc.stderr and "simulated" in proc.stderr
    assert "total" in proc.stderr


def test_run_two_gpus_and_appends(tmp_path):
    out = tmp_path / "r.jsonl"
    for _ in range(2):
        proc = run_meter(
            "run",
            "--no-cpu",
            "-o",
            str(out),
            "--",
            sys.executable,
            "-c",
            "pass",
            METER_SIMULATE_GPUS="300,150:sampled",
        )
        assert proc.returncode == 0, proc.stderr
    recs = list(read_jsonl(out))
    assert len(recs) == 2
    assert set(recs[0]["devices"]) == {"gpu:0", "gpu:1"}


def test_run_exits_with_the_commands_exit_code(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run_meter(
        "run",
        "-o",
        str(out),
        "--",
        sys.executable,
        "-c",
        "import sys; sys.exit(7)",
        METER_SIMULATE_GPUS="100",
    )
    assert proc.returncode == 7
    (rec,) = list(read_jsonl(out))
    assert rec["exit_code"] == 7


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_and_still_records(tmp_path, signum):
    out = tmp_path / "r.jsonl"
    ready = tmp_path / "ready"
    child = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(42))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        meter_cmd("run", "-o", str(out), "--", sys.executable, "-c", child),
        env=env(METER_SIMULATE_GPUS="200"),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    (rec,) = list(read_jsonl(out))
    assert rec["exit_code"] == 42
    assert rec["devices"]["gpu:0"]["energy_j"] > 0


def test_run_command_not_found():
    proc = run_meter("run", "--", "definitely-not-a-command-xyz", METER_SIMULATE_GPUS="100")
    assert proc.returncode == 127
    assert "not found" in proc.stderr


def test_run_without_command_is_usage_error():
    proc = run_meter("run")
    assert proc.returncode == 2
    assert "after --" in proc.stderr


@pytest.mark.parametrize("bad", ["-1", "0", "abc"])
def test_run_bad_interval_fails_fast(bad):
    proc = run_meter(
        "run", f"--interval={bad}", "--", sys.executable, "-c", "pass", METER_SIMULATE_GPUS="100"
    )
    assert proc.returncode == 2
    assert "interval" in proc.stderr


def test_bad_simulate_env_fails_fast():
    proc = run_meter("run", "--", sys.executable, "-c", "pass", METER_SIMULATE_GPUS="lots")
    assert proc.returncode == 2
    assert "METER_SIMULATE_GPUS" in proc.stderr


def test_devices_lists_simulated_gpus_and_cpu_status():
    proc = run_meter("devices", "--json", METER_SIMULATE_GPUS="300,150")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    gpus = [d for d in data["devices"] if d["kind"] == "gpu"]
    assert [g["key"] for g in gpus] == ["gpu:0", "gpu:1"]
    assert all(g["method"] == "simulated" for g in gpus)
    cpu = [d for d in data["devices"] if d["kind"] == "cpu"]
    if cpu and cpu[0]["method"] == "estimated":
        # RAPL unreadable here: the reason and the fix are listed, never silent.
        assert any(u["kind"] == "cpu" and u["fix"] for u in data["unavailable"])
        assert any("ESTIMATED" in w for w in data["warnings"])


def test_devices_under_torchrun_show_what_the_rank_meters():
    ranked = {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2"}
    proc = run_meter("devices", "--json", METER_SIMULATE_GPUS="300,150", **ranked)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [d["key"] for d in data["devices"]] == ["gpu:1"]
    assert any("local rank 0" in note for note in data["notes"]), data["notes"]
    text = run_meter("devices", METER_SIMULATE_GPUS="300,150", **ranked).stdout
    assert "note: rank 1" in text and "metered by local rank 0" in text, text


def test_devices_without_nvml_says_why():
    proc = run_meter("devices")
    assert proc.returncode == 0, proc.stderr
    if "gpu:0" not in proc.stdout:  # no NVIDIA driver on this machine
        assert "not available" in proc.stdout
        assert "NVML" in proc.stdout and "fix:" in proc.stdout


def test_calibrate_writes_idle_file_used_by_later_windows(tmp_path):
    idle_file = tmp_path / "idle.json"
    proc = run_meter(
        "calibrate",
        "--seconds",
        "0.5",
        "--force",  # busy or not (other tests may run meanwhile): item 8 is in test_cli_calibrate
        "--file",
        str(idle_file),
        METER_SIMULATE_GPUS="80",
        METER_NO_CPU="1",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(idle_file.read_text())
    (entry,) = data["devices"].values()
    assert entry["key"] == "gpu:0"
    assert abs(entry["idle_power_w"] - 80.0) < 2.0
    out = tmp_path / "r.jsonl"
    proc = run_meter(
        "run",
        "-o",
        str(out),
        "--",
        sys.executable,
        "-c",
        "pass",
        METER_SIMULATE_GPUS="80",
        METER_NO_CPU="1",
        METER_IDLE_FILE=str(idle_file),
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = list(read_jsonl(out))
    assert rec["devices"]["gpu:0"]["idle_power_w"] == pytest.approx(entry["idle_power_w"])
    assert rec["dynamic_energy_j"] is not None
    assert rec["dynamic_energy_j"] < 0.05 * rec["energy_j"] + 1.0


def test_run_reports_embedded_co2e_for_meter_zone_and_compares_zones(tmp_path):
    from meter.carbon.table import load_table

    out = tmp_path / "r.jsonl"
    proc = run_meter(
        "run",
        "--compare-zones",
        "PL,US-TEX-ERCO",
        "-o",
        str(out),
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(0.3)",
        METER_SIMULATE_GPUS="300",
        METER_ZONE="FR",
    )
    assert proc.returncode == 0, proc.stderr
    (rec,) = list(read_jsonl(out))
    fr = load_table().get("FR").g_per_kwh
    assert rec["carbon"]["zone"] == "FR" and rec["carbon"]["zone_from"] == "METER_ZONE"
    assert rec["carbon"]["provider"].startswith("embedded:")
    assert rec["co2e_g"] == pytest.approx(rec["energy_j"] / 3.6e6 * fr, rel=1e-6)
    assert rec["embodied_co2e_g"] > 0
    assert [z["zone"] for z in rec["compare_zones"]] == ["PL", "US-TEX-ERCO"]
    assert "CO2e location-based" in proc.stderr and "PL" in proc.stderr


def test_run_unknown_compare_zone_fails_before_running(tmp_path):
    marker = tmp_path / "ran"
    proc = run_meter(
        "run",
        "--compare-zones",
        "Narnia",
        "--",
        sys.executable,
        "-c",
        f"open({str(marker)!r}, 'w')",
        METER_SIMULATE_GPUS="300",
    )
    assert proc.returncode == 2
    assert "unknown zone" in proc.stderr
    assert not marker.exists()


def test_zones_command_lists_and_searches():
    proc = run_meter("zones", "germany")
    assert proc.returncode == 0, proc.stderr
    assert "DE" in proc.stdout and "electricitymaps" in proc.stdout
    proc = run_meter("zones", "--json", "aws:us-east-1")
    assert proc.returncode == 0, proc.stderr
    assert "US-MIDA-PJM" in proc.stdout

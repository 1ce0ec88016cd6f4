"""`meter run --output F`: the command's windows, then the run's record with its timeline, in F."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from meter.exporters.jsonl import WindowRecords, read_jsonl

from meter import Meter
from meter.core import options_from_env, run_report_hint
from meter.errors import ConfigError
from meter.testing import simulated_gpus
from tests.meter.test_cli import run_meter

TWO_EPOCHS = """
import time, meter
for _ in range(2):
    with meter.measure("epoch"):
        time.sleep(0.3)
"""


def test_the_commands_windows_come_first_then_the_run_with_its_timeline(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    proc = run_meter(
        "run",
        "--no-cpu",
        "--output",
        str(out),
        "--",
        sys.executable,
        "-c",
        TWO_EPOCHS,
        METER_SIMULATE_GPUS="300,150",
    )
    assert proc.returncode == 0, proc.stderr
    *windows, run = list(read_jsonl(out))
    assert [w["kind"] for w in windows] == ["window", "window"]
    assert [w["name"] for w in windows] == ["epoch", "epoch"]
    assert run["kind"] == "run"
    assert re.fullmatch(r"[0-9a-f]{32}", run["run_id"])
    assert {w["run_id"] for w in windows} == {run["run_id"]}
    for w in windows:
        assert set(w["devices"]) == {"gpu:0", "gpu:1"}
        # (A window that opens with the process's meter may close before the counters'
        # phase lock: then it is flagged approximate and may be off by a counter step.)
        tolerance = 0.35 if w["approximate"] else 0.05
        assert w["energy_j"] == pytest.approx(450.0 * w["duration_s"], rel=tolerance)

    timeline = run["timeline"]
    assert set(timeline) == {"t0", "bucket_s", "devices"}
    assert set(timeline["devices"]) == {"gpu:0", "gpu:1"}
    lists = [dev[k] for dev in timeline["devices"].values() for k in ("mean_w", "min_w", "max_w")]
    n = len(lists[0])
    assert n > 0 and all(len(values) == n for values in lists)
    gpu0 = timeline["devices"]["gpu:0"]
    assert gpu0["method"] == "simulated" and gpu0["kind"] == "gpu"
    assert [w for w in gpu0["mean_w"] if w is not None] == pytest.approx(
        [300.0] * n, rel=0.03
    )  # (the counter rate: +-1-2 % under load)
    assert all(round(w, 1) == w for w in gpu0["max_w"] if w is not None)
    start, end = timeline["t0"], timeline["t0"] + n * timeline["bucket_s"]
    for w in windows:
        assert start <= w["start_time"] < w["end_time"] <= end
    assert start <= run["start_time"] and run["end_time"] <= end

    # The last line says how to make the report.
    assert proc.stderr.rstrip().splitlines()[-1] == (
        f"meter: report: meter report {out} -o report.html"
    )


def test_no_timeline_and_no_output(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    proc = run_meter(
        "run",
        "--no-cpu",
        "--no-timeline",
        "-o",
        str(out),
        "--",
        sys.executable,
        "-c",
        "pass",
        METER_SIMULATE_GPUS="300",
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = list(read_jsonl(out))
    assert "timeline" not in run and re.fullmatch(r"[0-9a-f]{32}", run["run_id"])

    # Without --output: no record, no report line, and the command gets no file to write to.
    proc = run_meter(
        "run",
        "--no-cpu",
        "--",
        sys.executable,
        "-c",
        "import os; print(os.environ.get('METER_RUN_OUTPUT'), os.environ.get('METER_RUN_ID'))",
        METER_SIMULATE_GPUS="300",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None None"
    assert "meter report" not in proc.stderr


def test_the_default_meter_writes_windows_to_meter_run_output(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    env = {"METER_RUN_OUTPUT": str(out), "METER_RUN_ID": "ab" * 16}
    (sink,) = options_from_env(env)["settled_sinks"]
    assert isinstance(sink, WindowRecords) and sink.path == out
    with simulated_gpus([300.0]):
        m = Meter(cpu=False, carbon=False, sinks=[sink], idle_file="/nonexistent/idle.json")
        with m.measure("epoch"):
            pass
        with m.measure("request", group="http"):  # a shared window: not written one by one
            pass
        m.close()
    (record,) = list(read_jsonl(out))
    assert record["kind"] == "window" and record["run_id"] == "ab" * 16
    assert record["name"] == "epoch" and "gpu:0" in record["devices"]
    assert run_report_hint(env) == (
        f"meter: report (once `meter run` has ended): meter report {out} -o report.html"
    )
    assert run_report_hint({}) is None
    assert "settled_sinks" not in options_from_env({})


def test_a_meter_run_output_in_a_missing_folder_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="METER_RUN_OUTPUT") as info:
        options_from_env({"METER_RUN_OUTPUT": str(tmp_path / "gone" / "runs.jsonl")})
    assert info.value.setting == "METER_RUN_OUTPUT"

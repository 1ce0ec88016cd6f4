"""`meter run --output`: a run's record is never lost.

An output that cannot take a record fails before the command runs; one that breaks during the
run sends the record to the fallback file, or failing that to stderr, and the exit code says so.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from meter.exporters.jsonl import read_jsonl

from meter.cli import EXIT_RECORD_NOT_SAVED
from tests.meter.test_cli import run_meter

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# A file root cannot open for writing either: sysfs refuses writes to 0444 files whatever the
# capabilities (kernfs_fop_open).
SYSFS_READ_ONLY = "/sys/devices/system/cpu/online"


def unwritable_output(kind: str, tmp_path: Path) -> Path:
    if kind == "folder":
        return tmp_path
    if kind == "missing folder":
        return tmp_path / "no-such-folder" / "runs.jsonl"
    # read-only file
    if not RUNNING_AS_ROOT:
        out = tmp_path / "runs.jsonl"
        out.touch()
        out.chmod(0o444)
        return out
    try:
        os.close(os.open(SYSFS_READ_ONLY, os.O_RDWR | os.O_APPEND))
    except OSError:
        return Path(SYSFS_READ_ONLY)
    pytest.skip("as root, a chmod 0444 file is writable, and no read-only sysfs file is here")


@pytest.mark.parametrize("kind", ["folder", "read-only file", "missing folder"])
def test_an_output_that_cannot_take_a_record_fails_before_the_command_runs(tmp_path, kind):
    out = unwritable_output(kind, tmp_path)
    marker = tmp_path / "ran"
    proc = run_meter(
        "run",
        "--output",
        str(out),
        "--",
        sys.executable,
        "-c",
        f"open({str(marker)!r}, 'w')",
        METER_SIMULATE_GPUS="300",
    )
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    (line,) = proc.stderr.strip().splitlines()  # one line: what is wrong and how to fix it
    assert str(out) in line
    assert any(fix in line for fix in ("runs.jsonl", "chmod", "mkdir -p"))


BREAK_OUTPUT = {
    # A folder where the file was: works as root too.
    "replaced by a folder": "import os, sys; os.remove(sys.argv[1]); os.mkdir(sys.argv[1])",
    "made read-only": "import os, sys; os.chmod(sys.argv[1], 0o444)",
}


@pytest.mark.parametrize("command_exit", [0, 5])
@pytest.mark.parametrize("how", list(BREAK_OUTPUT))
def test_an_output_that_breaks_during_the_run_sends_the_record_to_the_fallback(
    tmp_path, how, command_exit
):
    if how == "made read-only" and RUNNING_AS_ROOT:
        pytest.skip("root writes to a read-only file; 'replaced by a folder' covers root")
    out, state = tmp_path / "runs.jsonl", tmp_path / "state"
    code = f"{BREAK_OUTPUT[how]}; sys.exit({command_exit})"
    proc = run_meter(
        "run",
        "--output",
        str(out),
        "--",
        sys.executable,
        "-c",
        code,
        str(out),
        METER_SIMULATE_GPUS="300",
        XDG_STATE_HOME=str(state),
    )
    # The command's own failure wins; a success becomes EX_IOERR (74).
    assert proc.returncode == (command_exit or EXIT_RECORD_NOT_SAVED), proc.stderr
    fallback = state / "meter" / "runs-fallback.jsonl"
    assert str(fallback) in proc.stderr and str(out) in proc.stderr
    (rec,) = list(read_jsonl(fallback))
    assert rec["exit_code"] == command_exit
    assert rec["intended_output"] == str(out)
    assert rec["devices"]["gpu:0"]["energy_j"] > 0


def test_when_the_fallback_fails_too_the_record_goes_to_stderr(tmp_path):
    out = tmp_path / "runs.jsonl"
    state = tmp_path / "state-is-a-file"
    state.touch()  # so the fallback's folder cannot be created
    proc = run_meter(
        "run",
        "--output",
        str(out),
        "--",
        sys.executable,
        "-c",
        BREAK_OUTPUT["replaced by a folder"],
        str(out),
        METER_SIMULATE_GPUS="300",
        XDG_STATE_HOME=str(state),
    )
    assert proc.returncode == EXIT_RECORD_NOT_SAVED, proc.stderr
    rec = json.loads(proc.stderr.strip().splitlines()[-1])
    assert rec["kind"] == "run" and rec["exit_code"] == 0
    assert rec["intended_output"] == str(out)
    assert rec["devices"]["gpu:0"]["energy_j"] > 0

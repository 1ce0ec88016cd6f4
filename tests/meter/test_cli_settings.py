"""`meter run` hands its settings to the command it runs, so the command's own windows agree
with the run's summary (issue 13, item 1)."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
from meter.exporters.jsonl import read_jsonl

from meter import config
from meter.cli import build_parser, command_settings
from tests.meter.test_cli import run_meter

# The command: opens a window of its own and prints what it metered and how it priced it.
OWN_WINDOW = """
import json, os, meter
with meter.measure("own") as w:
    pass
r = w.result
print(json.dumps({
    "zone": r.carbon["zone"],
    "pue": r.carbon["pue"],
    "market_basis": r.carbon.get("market_basis"),
    "devices": sorted(r.devices),
    "interval_s": meter.get_meter().interval_s,
    "env": {k: v for k, v in os.environ.items() if k.startswith("METER_")},
}))
"""


def own_window(*flags: str, tmp_path, **env: str) -> tuple[dict, dict]:
    """What the command's own window saw, and the run's record."""
    out = tmp_path / "run.jsonl"
    proc = run_meter("run", *flags, "-o", str(out), "--", sys.executable, "-c", OWN_WINDOW, **env)
    assert proc.returncode == 0, proc.stderr
    window, record = list(read_jsonl(out))  # the command's window goes to --output too
    assert (window["kind"], window["name"], record["kind"]) == ("window", "own", "run")
    assert window["run_id"] == record["run_id"]
    return json.loads(proc.stdout), record


def test_the_commands_own_window_gets_the_zone_given_to_meter_run(tmp_path):
    own, record = own_window("--zone", "PL", tmp_path=tmp_path, METER_SIMULATE_GPUS="300")
    assert own["zone"] == "PL" == record["carbon"]["zone"]
    assert own["env"]["METER_ZONE"] == "PL"


def test_every_flag_reaches_the_command_and_both_agree(tmp_path):
    own, record = own_window(
        "--zone",
        "FR",
        "--pue",
        "1.3",
        "--gpus",
        "1",
        "--no-cpu",
        "--interval",
        "0.05",
        "--market-factor",
        "50",
        "--gpu-correction",
        "off",
        tmp_path=tmp_path,
        METER_SIMULATE_GPUS="300,150",
    )
    assert own["zone"] == record["carbon"]["zone"] == "FR"
    assert own["pue"] == record["carbon"]["pue"] == 1.3
    assert own["market_basis"] == record["carbon"]["market_basis"]
    assert own["market_basis"] == "contractual factor 50 g/kWh"
    assert own["devices"] == sorted(record["devices"]) == ["gpu:1"]
    assert own["interval_s"] == record["interval_s"] == 0.05
    assert own["env"]["METER_GPU_CORRECTION"] == "off"


def test_a_flag_replaces_the_variable_of_the_other_market_basis(tmp_path):
    # METER_RENEWABLE_SHARE with --market-factor would give the command both (an error).
    own, record = own_window(
        "--market-factor",
        "20",
        tmp_path=tmp_path,
        METER_SIMULATE_GPUS="300",
        METER_RENEWABLE_SHARE="0.5",
    )
    assert "METER_RENEWABLE_SHARE" not in own["env"]
    assert own["market_basis"] == record["carbon"]["market_basis"] == "contractual factor 20 g/kWh"


def test_variables_set_for_meter_reach_the_command_unchanged(tmp_path):
    own, record = own_window(tmp_path=tmp_path, METER_SIMULATE_GPUS="300", METER_ZONE="DE")
    assert own["zone"] == record["carbon"]["zone"] == "DE"


def test_every_run_flag_with_a_variable_is_handed_on():
    """Each declared flag (`Setting.flag`) is an option of `meter run`, and is handed on."""
    run = build_parser().commands()["run"]
    flagged = [s for s in config.SETTINGS if s.flag]
    assert {s.flag for s in flagged} <= set(run.options())
    values = {"boolean": "", "number": "2", "integer": "2", "text": "0"}
    argv: list[str] = []
    for s in flagged:
        argv += [s.flag] if s.kind == "boolean" else [s.flag, values[s.kind]]
    args, _ = run.parse_known_args([*argv, "--", "true"])
    handed = command_settings(args)
    # Both market bases at once are refused before the command runs; here the factor wins.
    assert {k for k, v in handed.items() if v is not None} == {
        s.name for s in flagged if s.name != "METER_RENEWABLE_SHARE"
    }


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--no-cpu"], {"METER_NO_CPU": "1"}),
        (["--pue", "1.25"], {"METER_PUE": "1.25"}),
        (["--quiet"], {"METER_QUIET": "1"}),
        (["--renewable-share", "0.8"], {"METER_RENEWABLE_SHARE": "0.8"}),
        ([], {}),
    ],
)
def test_command_settings(flags, expected):
    args = build_parser().parse_args(["run", *flags, "--", "true"])
    assert isinstance(args, argparse.Namespace)
    handed = command_settings(args)
    if "METER_RENEWABLE_SHARE" in expected:
        expected = {**expected, "METER_MARKET_FACTOR_G_PER_KWH": None}
    assert handed == expected

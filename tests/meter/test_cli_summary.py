"""The run summary in units people read, the run named after its script, and a push confirmed
(issue 13, item 4)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from meter.exporters.jsonl import read_jsonl

from meter.cli import format_duration, format_energy, format_hms, format_mass, run_name
from tests.exporters.test_prometheus import FakeGateway
from tests.meter.test_cli import run_meter


@pytest.mark.parametrize(
    ("energy_j", "text"),
    [
        (0.0, "0 Wh"),
        (0.5, "0.000139 Wh"),
        (300.0, "0.0833 Wh"),
        (3600.0, "1.00 Wh"),
        (7.2e6, "2.00 kWh"),
        (3.6e9, "1.00 MWh"),
        (-360.0, "-0.100 Wh"),  # dynamic energy below a baseline
    ],
)
def test_energy_in_watt_hours(energy_j, text):
    assert format_energy(energy_j) == text


@pytest.mark.parametrize(
    ("grams", "text"),
    [
        (0.0, "0 g"),
        (0.000004, "0.00400 mg"),
        (0.0123, "12.3 mg"),
        (0.999, "999 mg"),
        (1.0, "1.00 g"),
        (123.4, "123 g"),
        (56_700.0, "56.7 kg"),
        (2.5e6, "2.50 t"),
    ],
)
def test_co2e_in_adaptive_units(grams, text):
    assert format_mass(grams) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "0.50 s"),
        (59.994, "59.99 s"),
        (60.0, "0:01:00"),
        (3723.4, "1:02:03"),
        (90061, "25:01:01"),
    ],
)
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_hms_clamps_a_negative_elapsed_time():
    assert format_hms(-3.0) == "0:00:00"


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["python", "train.py", "--epochs", "3"], "train.py"),
        (["/opt/venv/bin/python3", "src/train.py"], "train.py"),
        (["python3.11", "-u", "-X", "dev", "-W", "ignore", "train.py"], "train.py"),
        (["python", "-m", "pkg.train", "--lr", "1"], "pkg.train"),
        (["python", "-um", "pkg"], "pkg"),
        (["python", "-mpkg"], "pkg"),
        (["python", "-c", "print(1)"], "python -c"),
        (["python"], "python"),
        (["pypy3", "bench.py"], "bench.py"),
        (["./train.sh", "python"], "train.sh"),
        (["torchrun", "train.py"], "torchrun"),
    ],
)
def test_the_run_is_named_after_its_script(command, name):
    assert run_name(command) == name


def test_the_summary_reads_in_wh_and_adaptive_co2e(tmp_path):
    out = tmp_path / "r.jsonl"
    script = tmp_path / "train.py"
    script.write_text("import time; time.sleep(0.2)\n")
    proc = run_meter(
        "run", "--no-cpu", "--zone", "FR", "-o", str(out), "--", sys.executable, str(script),
        METER_SIMULATE_GPUS="300",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (rec,) = list(read_jsonl(out))
    assert rec["name"] == "train.py"
    total = next(line for line in proc.stderr.splitlines() if line.startswith("total"))
    assert f"{rec['energy_j']:.1f}" in total and format_energy(rec["energy_j"]) in total
    assert " Wh" in total
    # A fraction of a second at 300 W in France: milligrams, never "0.000 g".
    line = next(x for x in proc.stderr.splitlines() if x.startswith("CO2e location-based"))
    assert format_mass(rec["co2e_g"]) in line and " mg " in line
    assert "0.000 g" not in proc.stderr
    assert "from --zone" in line
    assert "\x1b[" not in proc.stderr  # stderr is not a terminal: no status line


def test_the_comparison_reads_in_adaptive_units(tmp_path):
    proc = run_meter(
        "run", "--no-cpu", "--compare-zones", "PL", "--", sys.executable, "-c", "pass",
        METER_SIMULATE_GPUS="300",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    after = proc.stderr.split("elsewhere", 1)[1]
    assert " J (" in proc.stderr.split("elsewhere", 1)[0].splitlines()[-1]
    assert "PL" in after and ("mg" in after or " g " in after)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    g = FakeGateway()
    yield g
    g.close()


def test_a_successful_push_is_confirmed_in_one_line(gateway):
    proc = run_meter(
        "run", "--no-cpu", "--push-gateway", gateway.url, "--push-job", "train",
        "--", sys.executable, "-c", "pass",
        METER_SIMULATE_GPUS="300",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert gateway.pushes, "nothing was pushed"
    confirmed = [x for x in proc.stderr.splitlines() if "pushed" in x]
    assert len(confirmed) == 1, proc.stderr
    assert gateway.url in confirmed[0] and "job train" in confirmed[0]


def test_a_failed_push_is_not_confirmed():
    proc = run_meter(
        "run", "--no-cpu", "--push-gateway", "http://127.0.0.1:9", "--",
        sys.executable, "-c", "pass",
        METER_SIMULATE_GPUS="300",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "final push to the Pushgateway failed" in proc.stderr
    assert "meter: pushed" not in proc.stderr

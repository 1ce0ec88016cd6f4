"""No traceback for a user error: each message names the flag or variable used and the fix; a
closed pipe ends ``meter`` quietly (issue 13, item 2)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from meter.cli import EXIT_BROKEN_PIPE
from tests.meter.test_cli import env, meter_cmd, run_meter


def assert_clean_error(proc: subprocess.CompletedProcess[str], *names: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for name in names:
        assert name in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["zones"],
        ["dashboard"],
        ["devices", "--json"],
    ],
)
def test_a_closed_pipe_ends_meter_quietly(args):
    # `meter zones | head -1`, with the reader gone before meter writes, so it always meets
    # the broken pipe (head may read all of a small output before it exits).
    proc = subprocess.Popen(
        meter_cmd(*args),
        env=env(METER_SIMULATE_GPUS="300"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert err == ""


def test_meter_zones_into_head():
    shell = f"{subprocess.list2cmdline(meter_cmd('zones'))} | head -1"
    proc = subprocess.run(
        ["bash", "-c", shell], env=env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("ZONE")
    assert proc.stderr == ""


@pytest.mark.parametrize("port", ["99999", "-5", "http"])
def test_a_bad_port_names_the_flag(port):
    proc = run_meter("serve", f"--port={port}", METER_SIMULATE_GPUS="300")
    assert_clean_error(proc, "--port", port)
    assert "address" not in proc.stderr.split("error:")[-1]
    proc = run_meter(
        "run", f"--prometheus-port={port}", "--", sys.executable, "-c", "pass",
        METER_SIMULATE_GPUS="300",
    )  # fmt: skip
    assert_clean_error(proc, "--prometheus-port", port)


def test_a_port_in_use_names_the_flag_of_the_command():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = run_meter(
            "run", "--prometheus-port", port, "--", sys.executable, "-c", "pass",
            METER_SIMULATE_GPUS="300",
        )  # fmt: skip
        assert_clean_error(proc, "--prometheus-port", port)
        assert "(--port)" not in proc.stderr
        proc = run_meter("serve", "--port", port, METER_SIMULATE_GPUS="300")
        assert_clean_error(proc, "(--port)", port)


@pytest.mark.parametrize(
    ("args", "extra_env", "names"),
    [
        (["--pue", "0.5"], {}, ["--pue 0.5", "at least 1.0"]),
        (["--gpus", "5"], {}, ["--gpus 5", "leave --gpus unset"]),
        ([], {"METER_GPUS": "5"}, ["METER_GPUS=5", "leave METER_GPUS unset"]),
        (["--gpus", "x"], {}, ["--gpus 'x'", "--gpus 0,1"]),
        (["--gpu-correction", "foo"], {}, ["--gpu-correction foo", "auto"]),
        (["--zone", "Narnia"], {}, ["--zone Narnia", "meter zones"]),
        (["--compare-zones", "Narnia"], {}, ["--compare-zones", "meter zones"]),
        (["--renewable-share", "2"], {}, ["--renewable-share 2.0", "between 0 and 1"]),
        (["--market-factor", "5", "--renewable-share", "0.5"], {}, ["--market-factor", "not both"]),
        ([], {"METER_PUE": "high"}, ["METER_PUE='high'"]),
        ([], {"METER_QUIET": "maybe"}, ["METER_QUIET='maybe'", "use 1, true"]),
        (["--push-job", "x"], {}, ["--push-job needs --push-gateway"]),
        (["--prometheus-addr", "0.0.0.0"], {}, ["--prometheus-addr needs --prometheus-port"]),
        (["--push-gateway", "ftp://gw"], {}, ["--push-gateway", "http://"]),
        (
            ["--push-gateway", "http://127.0.0.1:9", "--push-basic-auth-file", "/nonexistent"],
            {},
            ["--push-basic-auth-file", "/nonexistent"],
        ),
        (["--push-gateway", "http://127.0.0.1:9", "--push-interval", "0"], {}, ["--push-interval"]),
    ],
)
def test_run_errors_name_the_flag_or_variable_used(args, extra_env, names, tmp_path):
    marker = tmp_path / "ran"
    proc = run_meter(
        "run", *args, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
        METER_SIMULATE_GPUS="300", **extra_env,
    )  # fmt: skip
    assert_clean_error(proc, *names)
    assert not marker.exists()  # it failed before the command ran


def test_serve_errors_name_the_flag():
    proc = run_meter("serve", "--addr", "no-such-host.invalid", METER_SIMULATE_GPUS="300")
    assert_clean_error(proc, "--addr no-such-host.invalid", "0.0.0.0")
    proc = run_meter("serve", "--tls-cert", "cert.pem", METER_SIMULATE_GPUS="300")
    assert_clean_error(proc, "--tls-key")
    proc = run_meter("serve", "--basic-auth-file", "/nonexistent", METER_SIMULATE_GPUS="300")
    assert_clean_error(proc, "--basic-auth-file", "/nonexistent")


def test_file_errors_name_the_file_and_the_flag(tmp_path):
    missing = tmp_path / "no-such-folder" / "x.json"
    proc = run_meter("dashboard", "-o", str(missing))
    assert_clean_error(proc, "--output", str(missing), code=1)
    proc = run_meter(
        "calibrate", "--seconds", "0.1", "--force", "--idle-file", "/proc/meter/idle.json",
        METER_SIMULATE_GPUS="80", METER_NO_CPU="1",
    )  # fmt: skip
    assert_clean_error(proc, "/proc/meter/idle.json", "--idle-file", code=1)


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["rnu"], "did you mean 'run'?"),
        (["calibrat"], "did you mean 'calibrate'?"),
        (["run", "--zoen", "DE", "--", "true"], "did you mean --zone?"),
        (["serve", "--prot", "1"], "did you mean --port?"),
        (["zones", "--jsn"], "did you mean --json?"),
        (
            ["run", "--zoen=DE", "--peu", "2", "--", "true"],
            "--zone (for --zoen), --pue (for --peu)",
        ),
    ],
)
def test_a_mistyped_command_or_option_gets_a_suggestion(args, suggestion):
    proc = run_meter(*args)
    assert_clean_error(proc, suggestion, "usage:")


def test_the_commands_own_options_are_not_meters():
    # After the command starts, its options are its own (no "unrecognized", no suggestion).
    proc = run_meter(
        "run", "--no-cpu", sys.executable, "-c", "import sys; print(sys.argv[1:])", "--zoen",
        METER_SIMULATE_GPUS="300",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['--zoen']"

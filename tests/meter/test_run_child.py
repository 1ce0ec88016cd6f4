"""`meter run`'s child: it dies with meter, even by SIGKILL, and the terminal sees no change.

Real processes throughout: meter on a simulated GPU, a command that starts its own children,
and, for Ctrl-C and terminal input, a pseudo-terminal that is meter's controlling terminal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from meter.exporters.jsonl import read_jsonl

from tests.meter.ptys import Drained
from tests.meter.test_cli import env, meter_cmd

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the guardian needs Linux prctl(2)"
)

# The metered command: starts a grandchild and a daemon (its own session), writes the three
# pids, then sleeps (or exits at once with "exit").
SPAWNER = """
import os, subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # not meter's stderr pipe
grandchild = subprocess.Popen(sleep, **quiet)
daemon = subprocess.Popen(sleep, start_new_session=True, **quiet)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid} {daemon.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
if sys.argv[2] == "sleep":
    time.sleep(60)
"""


def wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (dead, waiting for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """The pids the spawner wrote, each killed at teardown if still there."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_spawner(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path]:
    """meter running the spawner; meter's stderr goes to a file, which survivors cannot hold."""
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)
    pids = tmp_path / "pids"
    cmd = meter_cmd("run", "--no-cpu", "--", sys.executable, str(script), str(pids), mode)
    with open(tmp_path / "meter.err", "wb") as err:
        proc = subprocess.Popen(cmd, env=env(METER_SIMULATE_GPUS="300"), stderr=err)
    return proc, pids


@linux_only
def test_sigkill_of_meter_kills_the_command_and_all_it_started(tmp_path, spawned):
    proc, pids_file = start_spawner(tmp_path, "sleep")
    wait_for(pids_file)
    spawned += [int(p) for p in pids_file.read_text().split()]
    assert all(alive(p) for p in spawned)

    proc.kill()  # SIGKILL: meter runs no cleanup at all
    proc.wait(timeout=30)

    deadline = time.monotonic() + 10
    while any(alive(p) for p in spawned) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in spawned if alive(p)]
    assert not left, f"still running after meter was killed: {left} of {spawned}"


@linux_only
def test_a_daemon_the_command_leaves_behind_survives_a_normal_exit(tmp_path, spawned):
    proc, pids_file = start_spawner(tmp_path, "exit")
    assert proc.wait(timeout=60) == 0, (tmp_path / "meter.err").read_text()
    command, grandchild, daemon = (int(p) for p in pids_file.read_text().split())
    spawned += [command, grandchild, daemon]
    assert not alive(command)
    assert alive(grandchild) and alive(daemon)  # meter kills nothing once the command is done


def test_the_command_runs_in_meters_process_group(tmp_path):
    # The same group as without the guardian: Ctrl-C, Ctrl-Z, bg and fg and terminal reads
    # behave as for any command a shell runs.
    out = tmp_path / "group"
    code = f"import os; open({str(out)!r}, 'w').write(str(os.getpgrp()))"
    proc = subprocess.Popen(
        meter_cmd("run", "--no-cpu", "--", sys.executable, "-c", code),
        env=env(METER_SIMULATE_GPUS="300"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # meter leads a group of its own, as under an interactive shell
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert int(out.read_text()) == proc.pid


def test_a_command_killed_by_a_signal_exits_128_plus_n(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run(
        meter_cmd(
            "run",
            "--no-cpu",
            "-o",
            str(out),
            "--",
            sys.executable,
            "-c",
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        ),
        env=env(METER_SIMULATE_GPUS="300"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
    (rec,) = list(read_jsonl(out))
    assert rec["exit_code"] == 128 + signal.SIGKILL


# -- on a terminal -----------------------------------------------------------------------------

# Makes the pseudo-terminal meter's controlling terminal (a session leader's first open of a
# terminal acquires it, and its group becomes the foreground), then becomes meter.
ON_TERMINAL = """
import os, sys
os.setsid()
tty = os.open(sys.argv[1], os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(tty, fd)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


class Terminal(Drained):
    """A pseudo-terminal whose output is drained in the background (so meter never blocks)."""

    def __init__(self) -> None:
        master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        self.start_draining(master)

    def run_meter(self, *args: str) -> subprocess.Popen[bytes]:
        launch = [sys.executable, "-c", ON_TERMINAL, self.slave_name, "-m", "meter"]
        return subprocess.Popen([*launch, *args], env=env(METER_SIMULATE_GPUS="300"))

    def close(self) -> None:
        os.close(self.master)
        self.join()


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if not hasattr(os, "openpty") or not sys.platform.startswith("linux"):
        pytest.skip("needs a Linux pseudo-terminal")
    term = Terminal()
    yield term
    term.close()


# Counts the SIGINTs it gets; after the first, waits a second for a duplicate, then exits 3.
COUNT_SIGINTS = """
import pathlib, signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda *a: got.append(1))
pathlib.Path(sys.argv[1]).touch()
deadline = time.monotonic() + 30
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(1.0)
pathlib.Path(sys.argv[2]).write_text(str(len(got)))
sys.exit(3)
"""


def test_ctrl_c_on_the_terminal_reaches_the_command_exactly_once(tmp_path, terminal):
    ready, count = tmp_path / "ready", tmp_path / "count"
    script = tmp_path / "count.py"
    script.write_text(COUNT_SIGINTS)
    meter = terminal.run_meter(
        "run", "--no-cpu", "--", sys.executable, str(script), str(ready), str(count)
    )
    wait_for(ready)
    os.write(terminal.master, b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground group
    assert meter.wait(timeout=60) == 3, terminal.output.decode(errors="replace")
    assert count.read_text() == "1"  # not forwarded as well: the terminal sent it to both


def test_the_command_reads_the_terminal(tmp_path, terminal):
    # pdb and input() read the terminal: the command must be in its foreground group, or the
    # read stops it with SIGTTIN.
    ready, line = tmp_path / "ready", tmp_path / "line"
    code = (
        f"import pathlib; pathlib.Path({str(ready)!r}).touch(); "
        f"pathlib.Path({str(line)!r}).write_text(input())"
    )
    meter = terminal.run_meter("run", "--no-cpu", "--", sys.executable, "-c", code)
    wait_for(ready)
    os.write(terminal.master, b"typed at the terminal\n")
    assert meter.wait(timeout=60) == 0, terminal.output.decode(errors="replace")
    assert line.read_text() == "typed at the terminal"

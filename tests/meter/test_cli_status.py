"""`meter run`'s live status line: on a terminal only, at most once a second, on a row of its
own (issue 13, item 5)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from meter.cli import LiveFigures, StatusLine, status_text
from tests.meter.ptys import Drained
from tests.meter.test_cli import env, meter_cmd, run_meter


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def status_line(clock: FakeClock, written: list[bytes], size=(80, 24), **kw) -> StatusLine:
    return StatusLine(
        -1, clock=clock, write=written.append, size=lambda: size, foreground=lambda: True, **kw
    )


def test_the_status_text():
    text = status_text(LiveFigures(3723.0, {"gpu": 612.4, "cpu": 45.0}, 7.2e6, 2500.0))
    assert text == "meter 1:02:03 | gpu 612 W, cpu 45 W | 2.00 kWh | 2.50 kg CO2e"
    assert status_text(LiveFigures(1.0, {}, 0.0, None)) == "meter 0:00:01 | 0 Wh"


def test_the_line_is_redrawn_at_most_once_per_period():
    clock, written = FakeClock(), []
    line = status_line(clock, written)
    assert line.update("first")
    clock.t += 0.5
    assert not line.update("too soon")
    clock.t += 0.49
    assert not line.update("still too soon")
    clock.t += 0.01
    assert line.update("second")
    clock.t += 5.0
    assert line.update("third")
    assert len(written) == 3
    text = b"".join(written).decode()
    assert "too soon" not in text and "first" in text and "third" in text


def test_the_line_sits_on_the_last_row_outside_the_scrolling_region():
    clock, written = FakeClock(), []
    line = status_line(clock, written, size=(40, 10))
    line.update("x" * 100)
    first = written[0].decode()
    # Room is made once (IND, RI), the region is every row but the last, the cursor comes back.
    assert first.startswith("\x1b7\x1b[r\x1b8\x1bD\x1bM\x1b7\x1b[1;9r\x1b[10;1H")
    assert first.endswith("x" * 39 + "\x1b8")  # cut to the width, less one column
    clock.t += 1.0
    line.update("y")
    assert "\x1bD" not in written[1].decode()  # same size: no more room made
    line.close()
    assert written[-1] == b"\x1b7\x1b[r\x1b[10;1H\x1b[2K\x1b8"  # whole screen back, row cleared
    n = len(written)
    line.close()
    assert len(written) == n  # idempotent


def test_a_resized_terminal_gets_its_region_again():
    clock, written, size = FakeClock(), [], [80, 24]
    line = StatusLine(
        -1,
        clock=clock,
        write=written.append,
        size=lambda: (size[0], size[1]),
        foreground=lambda: True,
    )
    line.update("a")
    size[1] = 30
    clock.t += 1.0
    line.update("b")
    assert "\x1b[1;29r\x1b[30;1H" in written[1].decode()
    assert written[1].startswith(b"\x1b7\x1b[r\x1b8\x1bD\x1bM")


@pytest.mark.parametrize("size", [(0, 0), (80, 2), (10, 24)])
def test_nothing_is_drawn_on_a_terminal_of_unknown_or_tiny_size(size):
    written: list[bytes] = []
    line = status_line(FakeClock(), written, size=size)
    assert not line.update("x")
    line.close()
    assert written == []


def test_nothing_is_drawn_in_the_background():
    written: list[bytes] = []
    line = StatusLine(
        -1, clock=FakeClock(), write=written.append, size=lambda: (80, 24), foreground=lambda: False
    )
    assert not line.update("x")
    assert written == []


def test_no_status_when_stderr_is_not_a_terminal():
    proc = run_meter(
        "run", "--", sys.executable, "-c", "import time; time.sleep(1.5)",
        METER_SIMULATE_GPUS="300", TERM="xterm",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "| gpu" not in proc.stderr


class Terminal(Drained):
    """A pseudo-terminal of 24 x 80 whose output is drained in the background."""

    def __init__(self) -> None:
        master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.closed = False
        self.start_draining(master)

    def run(self, *args: str, **extra_env: str) -> int:
        """``meter`` with stdout and stderr on the terminal; its exit code."""
        proc = subprocess.Popen(
            meter_cmd(*args),
            stdin=subprocess.DEVNULL,
            stdout=self.slave,
            stderr=self.slave,
            env=env(METER_SIMULATE_GPUS="300", TERM="xterm", **extra_env),
        )
        return proc.wait(timeout=60)

    def text(self) -> str:
        """Everything written to the terminal (once the last writer is gone)."""
        if not self.closed:
            self.closed = True
            os.close(self.slave)
            self.join()
            os.close(self.master)
        return bytes(self.output).decode(errors="replace")


@pytest.fixture
def terminal():
    if not sys.platform.startswith("linux"):
        pytest.skip("needs a Linux pseudo-terminal")
    term = Terminal()
    yield term
    term.text()


COMMAND = "import time; print('hello', flush=True); time.sleep(2.5); print('bye')"


def test_the_status_line_appears_on_a_terminal(terminal):
    code = terminal.run("run", "--no-cpu", "--", sys.executable, "-c", COMMAND)
    out = terminal.text()
    assert code == 0, out
    assert "\x1b[1;23r\x1b[24;1H" in out  # drawn on the last row, outside the region
    assert "meter 0:00:01 | gpu 300 W | " in out and " CO2e\x1b8" in out
    # The command's lines are whole, and the screen is given back before the summary.
    assert "hello\r\n" in out and "bye\r\n" in out
    assert out.index("\x1b7\x1b[r\x1b[24;1H\x1b[2K\x1b8") < out.index("device  method")


@pytest.mark.parametrize(("flags", "extra_env"), [(["--quiet"], {}), ([], {"METER_QUIET": "1"})])
def test_quiet_turns_the_status_line_off(terminal, flags, extra_env):
    code = terminal.run("run", *flags, "--no-cpu", "--", sys.executable, "-c", COMMAND, **extra_env)
    out = terminal.text()
    assert code == 0, out
    assert "\x1b[1;23r" not in out and "| gpu" not in out
    assert "device  method" in out  # the summary itself still comes

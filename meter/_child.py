"""The command ``meter run`` meters, started so that it cannot outlive ``meter``.

A ``meter run`` killed with SIGKILL (``kill -9``, the OOM killer, a scheduler's hard stop)
runs no cleanup, and on Linux its child and the child's own children are re-parented to init
and keep running, unmetered, on the GPUs they hold. So on Linux the command is started by a
*guardian*: this file run as a script (``python -I -S``: standard library only, no site
packages; it delays the command by about 25 ms), between ``meter`` and the command::

    meter  --lifeline pipe-->  guardian (own process group)  -->  command (meter's group)  --> ...

- ``meter`` holds the write end of a pipe whose read end only the guardian holds. However
  ``meter`` dies, the kernel closes that end and the guardian reads EOF: it then kills every
  process below it with SIGKILL, parents first, until none is left, and exits.
- The guardian is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``, Linux 3.4, prctl(2)):
  whatever the command starts, double-forked daemons and ``setsid`` sessions included, is
  re-parented to the guardian rather than to init when its own parent dies, so the guardian
  finds it by its parent pid, whatever its process group. A process group alone would miss
  the ``setsid`` ones, and ``PR_SET_PDEATHSIG`` alone covers only the direct child.
- The command gets ``PR_SET_PDEATHSIG`` = SIGKILL (set in the guardian's fork before exec;
  the guardian has no threads, so Python code there is safe, unlike in ``meter``, whose sampler
  threads run), so it also dies if the guardian itself is killed. After prctl the fork checks
  that its parent is still the guardian: one that died just before would never signal it.
- The command runs in ``meter``'s process group, as it did before the guardian existed, so the
  terminal sees no difference: Ctrl-C and Ctrl-Z reach ``meter`` and the command together, the
  command reads the terminal when ``meter`` is in the foreground (pdb, ``input()``), and ``bg``
  and ``fg`` work. A group of its own would have meant handing it the terminal
  (``tcsetpgrp``) and emulating a shell's job control for Ctrl-Z, SIGTTIN and ``fg``, for no
  gain: the subreaper finds the command's processes in any group. The guardian sits in a group
  of its own so the terminal's signals never reach it; it forwards to the command only what
  ``meter`` forwards (SIGINT, SIGTERM).
- When the command exits, the guardian exits with its status (``128+N`` for signal N) and
  kills nothing: what the command deliberately left running (a daemon) carries on, re-parented
  onward as it would have been without ``meter``.

Elsewhere (no ``prctl``: macOS, the BSDs, Windows), and if the guardian cannot start, the
command is a plain child of ``meter`` as before: a ``meter`` killed with SIGKILL leaves it
running.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl() -> Callable[..., int] | None:
    """libc's prctl(2), or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        func = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    func.restype = ctypes.c_int
    return func


def exit_code(returncode: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N for a death by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


# -- meter's side ----------------------------------------------------------------------------


class GuardianFailed(RuntimeError):
    """The guardian could not start the command (it is then started without one)."""


class Child:
    """The running command. Signals reach it through the guardian, if there is one."""

    def __init__(self, proc: subprocess.Popen[bytes], lifeline: int | None) -> None:
        self._proc = proc
        self._lifeline = lifeline

    @property
    def guarded(self) -> bool:
        """Whether the command dies with ``meter`` (Linux, guardian started)."""
        return self._lifeline is not None

    def send_signal(self, signum: int) -> None:
        with suppress(ProcessLookupError):
            self._proc.send_signal(signum)

    def wait(self) -> int:
        """Wait for the command; its exit code (128+N for a death by signal N)."""
        code = exit_code(self._proc.wait())
        self.close()
        return code

    def close(self) -> None:
        """Let go of the lifeline. If the command still runs, the guardian kills it."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None


def start(command: Sequence[str]) -> Child:
    """Start ``command``, under a guardian where the platform allows one.

    Raises ``OSError`` (``FileNotFoundError``, ``PermissionError``...) when it cannot be run.
    """
    import subprocess

    if _prctl() is not None and sys.executable and os.path.exists(__file__):
        try:
            return _start_guarded(command)
        except GuardianFailed as exc:
            print(
                f"meter: {exc}; the command runs unguarded: if meter is killed, it may outlive it",
                file=sys.stderr,
            )
    return Child(subprocess.Popen(list(command)), None)


def _start_guarded(command: Sequence[str]) -> Child:
    import subprocess

    life_r, life_w = os.pipe()  # both ends close-on-exec: nothing else inherits them
    report_r, report_w = os.pipe()
    args = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
    args += [str(life_r), str(report_w), str(os.getpgrp()), "--", *command]
    # Its own process group from the start, so no Ctrl-C reaches it; Python 3.10 has no
    # process_group= and the guardian moves itself first thing.
    group: dict[str, Any] = {"process_group": 0} if sys.version_info >= (3, 11) else {}
    try:
        proc = subprocess.Popen(args, pass_fds=(life_r, report_w), **group)
    except OSError as exc:
        os.close(life_w)
        os.close(report_r)
        raise GuardianFailed(f"could not start the process guardian: {exc}") from None
    finally:
        os.close(life_r)
        os.close(report_w)
    try:
        report = _read_all(report_r)
    except BaseException:
        os.close(life_w)  # the guardian sees EOF and kills the command if it started it
        raise
    finally:
        os.close(report_r)
    if report == b"ok":
        return Child(proc, life_w)
    proc.wait()
    os.close(life_w)
    if report.startswith(b"exec "):
        errno = int(report.split()[1])
        raise OSError(errno, os.strerror(errno), command[0])
    detail = report.decode(errors="replace") or f"exit code {exit_code(proc.returncode)}"
    raise GuardianFailed(f"the process guardian failed ({detail})")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


# -- the guardian ----------------------------------------------------------------------------


def _guard(argv: list[str]) -> int:
    """Start the command, relay its exit status, and kill all below if the lifeline breaks."""
    life_r, report_w, pgid = int(argv[0]), int(argv[1]), int(argv[2])
    command = argv[4:]
    for fd in (life_r, report_w):
        os.set_inheritable(fd, False)
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.write(report_w, b"PR_SET_CHILD_SUBREAPER failed")
        return 1

    import select

    relayed = {signal.SIGINT, signal.SIGTERM}
    # What meter's own parent set (``nohup`` and ``cmd &`` ignore some): the command gets it.
    inherited = {s: signal.getsignal(s) for s in (*relayed, signal.SIGCHLD)}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a SIGCHLD wakes the select below
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    command_pid = 0
    status: int | None = None

    def forward(signum: int, frame: object) -> None:
        if command_pid and status is None:  # not reaped yet: the pid is still the command's
            with suppress(ProcessLookupError):
                os.kill(command_pid, signum)

    for s in relayed:
        signal.signal(s, forward)

    started = _spawn(command, pgid, prctl, inherited, report_w)
    if started is None:
        return 127
    command_pid = started
    os.write(report_w, b"ok")
    os.close(report_w)

    while True:
        signal.pthread_sigmask(signal.SIG_BLOCK, relayed)  # forward() never races the reaping
        try:
            while True:  # reap the command and any orphan re-parented here
                try:
                    pid, wait_status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid == command_pid:
                    status = wait_status
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, relayed)
        if status is not None:
            return exit_code(os.waitstatus_to_exitcode(status))
        ready, _, _ = select.select([life_r, wake_r], [], [])
        if life_r in ready and not os.read(life_r, 1):
            _kill_descendants()  # meter is gone
            return 1
        if wake_r in ready:
            os.read(wake_r, 4096)


def _spawn(
    command: list[str],
    pgid: int,
    prctl: Callable[..., int],
    inherited: dict[signal.Signals, Any],
    report_w: int,
) -> int | None:
    """Fork and exec the command; its pid, or None after reporting why it did not start."""
    guardian = os.getpid()
    err_r, err_w = os.pipe()  # close-on-exec: EOF on a successful exec
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the fork
        try:
            signal.set_wakeup_fd(-1)
            for s, handler in inherited.items():
                signal.signal(s, signal.SIG_IGN if handler == signal.SIG_IGN else signal.SIG_DFL)
            # Python ignores these for itself; subprocess restores them too (restore_signals).
            for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            os.setpgid(0, pgid)  # back into meter's group: the terminal treats it as before
            if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError("PR_SET_PDEATHSIG failed")
            if os.getppid() != guardian:  # the guardian died before prctl took effect
                os._exit(1)
        except OSError as exc:
            os.write(err_w, f"setup {exc}".encode())
            os._exit(1)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(err_w, f"exec {exc.errno}".encode())
        os._exit(127)
    os.close(err_w)
    err = _read_all(err_r)
    os.close(err_r)
    if not err:
        return pid
    os.waitpid(pid, 0)
    os.write(report_w, err)
    return None


def _kill_descendants() -> None:
    """SIGKILL every process below this one, parents first, until none is left.

    A killed process's children are re-parented here (the guardian is their subreaper) before
    its zombie can be reaped, so each round finds the next generation.
    """
    import time

    me = os.getpid()
    while True:
        for kid in _children(me):
            with suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
        reaped = False
        while True:
            try:
                child, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no child left, alive or zombie
            if child == 0:
                break
            reaped = True
        if not reaped:
            time.sleep(0.005)  # the killed ones are still dying


def _children(ppid: int) -> list[int]:
    """The pids whose parent is ``ppid``, from /proc/*/stat (no CONFIG_PROC_CHILDREN needed)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        # the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == ppid:
            kids.append(int(name))
    return kids


if __name__ == "__main__":  # pragma: no cover - the guardian, run by start()
    sys.exit(_guard(sys.argv[1:]))

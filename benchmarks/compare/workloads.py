"""The child side of the side-by-side benchmark: one measurement in a fresh interpreter.

    python workloads.py TASK TOOL [JSON-OPTIONS]

runs inside one tool's benchmark environment (``.bench-venvs/<tool>``), with only the standard
library, numpy, torch and that tool importable, and prints its result as one JSON line prefixed with
``RESULT `` on stdout. `run_compare.py` starts it, many times, interleaving the tools.

TASK is one of:

* ``session``: import the tool, set it up, then time empty tracked blocks (start/stop latency),
  the tool's full start/stop cycle, and the process's RSS after each step;
* ``idle``: start the tool's background tracking, then measure the CPU time of the whole
  process (all threads, and any child processes) over an idle sleep;
* ``train``: an MLP training loop (numpy, or PyTorch on the CPU: ``framework``) of a fixed
  number of steps, with the tool measuring every step (``mode=step``), the whole loop
  (``mode=run``), or absent (``TOOL=none``).

TOOL is ``none``, ``meter``, ``codecarbon`` or ``zeus``. Nothing here writes files: CodeCarbon
runs offline with ``save_to_file=False``, Zeus without a log file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

JOULES_PER_KWH = 3.6e6

# -- process figures from /proc (no psutil: it must not be imported for the tool-less runs) -----


def _status_kb(field: str, pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (from ``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *_descendants(kid)]
    return out


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process (all threads, nanosecond clock) and by its live
    child processes (``/proc``, clock ticks)."""
    own = time.process_time()
    return own + sum(_cpu_s(kid) for kid in _descendants(os.getpid()))


def rss_mb() -> float:
    """RSS of this process plus its live child processes, in MiB."""
    kids = _descendants(os.getpid())
    return (_status_kb("VmRSS") + sum(_status_kb("VmRSS", k) for k in kids)) / 1024


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


# -- the tools ------------------------------------------------------------------------------------


class Tool:
    """One tool, driven the way its documentation shows. Subclasses fill in the calls."""

    name = "none"
    #: The statement timed by the import benchmark.
    import_statement = "pass"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def import_(self) -> None:
        """Import the tool's public entry point."""

    def setup(self) -> None:
        """Construct the tracker (and start whatever the tool starts before the first block)."""

    def begin(self) -> None:
        """Open a tracked block (one training step)."""

    def end(self) -> float | None:
        """Close the block opened by `begin`; the energy it reported, in joules."""
        return None

    def steps_energy_j(self, reported: list[float]) -> float | None:
        """The energy of all the blocks, once the loop is over: by default the sum of what
        `end` returned."""
        return sum(reported) if reported else None

    def blocks(self, n: int) -> None:
        """``n`` empty tracked blocks in a tight loop, written as a user would write them."""

    def start_run(self) -> None:
        """Start tracking the whole run (background sampling runs from here)."""

    def stop_run(self) -> dict[str, Any]:
        """Stop tracking the whole run; what the tool reported."""
        return {}

    def lifecycle(self) -> None:
        """One complete, fresh construct-start-stop cycle (the cost of tracking a short job)."""

    def describe(self) -> dict[str, Any]:
        """What the tool found to measure on this machine."""
        return {}

    def close(self) -> None:
        """Release everything (threads, devices)."""


class Meter(Tool):
    name = "meter"
    import_statement = "import meter"

    def import_(self) -> None:
        import meter

        self.meter = meter

    def setup(self) -> None:
        # The process default meter, built from METER_* variables, started as the first
        # window would start it.
        self.m = self.meter.get_meter().start()

    def begin(self) -> None:
        self._w = self.meter.measure("step")
        self._w.__enter__()

    def end(self) -> float | None:
        # Closing is all a training loop does per step: the window's figures are worked out
        # off the training thread (or when read) and show in the per-name totals and the
        # exporters. A loop that wants each step's figure reads `w.totals` or `w.result`.
        self._w.__exit__(None, None, None)
        return None

    def steps_energy_j(self, reported: list[float]) -> float | None:
        stats = self.m.window_stats.get("step")
        return None if stats is None else stats.energy_j

    def blocks(self, n: int) -> None:
        measure = self.meter.measure
        for _ in range(n):
            with measure("x"):
                pass

    def start_run(self) -> None:
        self._run = self.meter.measure("run")
        self._run.__enter__()

    def stop_run(self) -> dict[str, Any]:
        self._run.__exit__(None, None, None)
        r = self._run.result
        return {
            "energy_j": r.energy_j,
            "methods": sorted(r.methods),
            "devices": {k: d.energy_j for k, d in r.devices.items()},
        }

    def lifecycle(self) -> None:
        m = self.meter.Meter(idle_file=os.environ.get("METER_IDLE_FILE"))
        with m.measure("job"):
            pass
        m.close()

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.meter.__version__,
            "devices": [f"{d.key} ({d.method})" for d in self.m.devices],
            "interval_s": self.m.interval_s,
            "unavailable": [u.reason for u in self.m.unavailable][:3],
        }

    def close(self) -> None:
        self.m.close()
        self.meter.set_meter(None)  # the next get_meter() builds a fresh default


class CodeCarbon(Tool):
    name = "codecarbon"
    import_statement = "from codecarbon import OfflineEmissionsTracker"

    def import_(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        self.cls = OfflineEmissionsTracker

    def _tracker(self) -> Any:
        return self.cls(
            country_iso_code="DEU",
            save_to_file=False,
            log_level="error",
            measure_power_secs=float(self.options.get("measure_power_secs", 15)),
        )

    def setup(self) -> None:
        self.t = self._tracker()
        self.state = "new"

    def _for_tasks(self) -> Any:
        # start() after start_task() is a no-op ("Already started tracking") and start_task()
        # after stop() fails, so the task API and the start/stop API each get their own tracker.
        if self.state not in ("new", "tasks"):
            self.t = self._tracker()
        self.state = "tasks"
        return self.t

    def begin(self) -> None:
        self._for_tasks().start_task()

    def end(self) -> float | None:
        data = self.t.stop_task()
        return None if data is None else data.energy_consumed * JOULES_PER_KWH

    def blocks(self, n: int) -> None:
        t = self._for_tasks()
        for _ in range(n):
            t.start_task()
            t.stop_task()

    def start_run(self) -> None:
        if self.state != "new":
            self.t = self._tracker()
        self.state = "run"
        self.t.start()

    def stop_run(self) -> dict[str, Any]:
        self.t.stop()
        self.state = "stopped"
        data = self.t.final_emissions_data
        if data is None:
            return {"energy_j": None}
        return {
            "energy_j": data.energy_consumed * JOULES_PER_KWH,
            "cpu_energy_j": data.cpu_energy * JOULES_PER_KWH,
            "ram_energy_j": data.ram_energy * JOULES_PER_KWH,
            "gpu_energy_j": data.gpu_energy * JOULES_PER_KWH,
            "cpu_power_w": data.cpu_power,
            "ram_power_w": data.ram_power,
        }

    def lifecycle(self) -> None:
        t = self._tracker()
        t.start()
        t.stop()

    def describe(self) -> dict[str, Any]:
        import codecarbon

        hardware = [type(h).__name__ for h in getattr(self.t, "_hardware", [])]
        cpu = next((h for h in getattr(self.t, "_hardware", []) if "CPU" in type(h).__name__), None)
        return {
            "version": codecarbon.__version__,
            "hardware": hardware,
            "cpu_mode": getattr(cpu, "_mode", None),
            "cpu_tdp_w": getattr(cpu, "_tdp", None),
            "tracking_mode": getattr(self.t, "_tracking_mode", None),
            "measure_power_secs": getattr(self.t, "_measure_power_secs", None),
        }


class Zeus(Tool):
    name = "zeus"
    import_statement = "from zeus.monitor import ZeusMonitor"

    def import_(self) -> None:
        from zeus.monitor import ZeusMonitor

        self.cls = ZeusMonitor

    def setup(self) -> None:
        self.z = self.cls()

    def begin(self) -> None:
        self.z.begin_window("step")

    def end(self) -> float | None:
        return float(self.z.end_window("step").total_energy)

    def blocks(self, n: int) -> None:
        z = self.z
        for _ in range(n):
            z.begin_window("x")
            z.end_window("x")

    def start_run(self) -> None:
        self.z.begin_window("run")

    def stop_run(self) -> dict[str, Any]:
        m = self.z.end_window("run")
        return {
            "energy_j": float(m.total_energy),
            "gpu_energy_j": dict(m.gpu_energy),
            "cpu_energy_j": None if m.cpu_energy is None else dict(m.cpu_energy),
        }

    def lifecycle(self) -> None:
        z = self.cls()
        z.begin_window("job")
        z.end_window("job")

    def describe(self) -> dict[str, Any]:
        import importlib.metadata

        return {
            "version": importlib.metadata.version("zeus"),
            "gpu_indices": list(self.z.gpu_indices),
            "cpu_indices": list(self.z.cpu_indices),
        }


TOOLS: dict[str, type[Tool]] = {
    "none": Tool,
    "meter": Meter,
    "codecarbon": CodeCarbon,
    "zeus": Zeus,
}

# -- the tasks -----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


def session(tool: Tool, opts: dict[str, Any]) -> dict[str, Any]:
    """Import, setup, per-block latency, full cycles, and RSS along the way."""
    out: dict[str, Any] = {"rss_mb": {"python": rss_mb()}}
    t0 = time.perf_counter()
    tool.import_()
    out["import_s"] = time.perf_counter() - t0
    out["rss_mb"]["imported"] = rss_mb()
    t0 = time.perf_counter()
    tool.setup()
    out["setup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tool.start_run()
    out["start_s"] = time.perf_counter() - t0
    time.sleep(float(opts.get("settle_s", 2.0)))  # let background samplers take a few samples
    out["rss_mb"]["started"] = rss_mb()
    out["threads_started"] = threads()
    t0 = time.perf_counter()
    out["stopped_report"] = tool.stop_run()
    out["stop_s"] = time.perf_counter() - t0

    # Per-block latency: the first block on its own, then batches sized to take >= 20 ms.
    t0 = time.perf_counter()
    tool.blocks(1)
    out["first_block_s"] = time.perf_counter() - t0
    batch = 1
    while True:
        t0 = time.perf_counter()
        tool.blocks(batch)
        took = time.perf_counter() - t0
        if took >= 0.02 or batch >= 100_000:
            break
        batch *= 4
    per_block: list[float] = []
    deadline = time.perf_counter() + float(opts.get("latency_budget_s", 2.0))
    while len(per_block) < int(opts.get("batches", 20)) and (
        len(per_block) < 3 or time.perf_counter() < deadline
    ):
        t0 = time.perf_counter()
        tool.blocks(batch)
        per_block.append((time.perf_counter() - t0) / batch)
    out["block_batch"] = batch
    out["block_s"] = per_block
    out["block_s_median"] = _median(per_block)
    out["rss_mb"]["after_blocks"] = rss_mb()

    cycles: list[float] = []
    for _ in range(int(opts.get("cycles", 3))):
        t0 = time.perf_counter()
        tool.lifecycle()
        cycles.append(time.perf_counter() - t0)
    out["cycle_s"] = cycles
    out["rss_mb"]["end"] = rss_mb()
    out["vm_hwm_mb"] = _status_kb("VmHWM") / 1024
    out["describe"] = tool.describe()
    tool.close()
    return out


def idle(tool: Tool, opts: dict[str, Any]) -> dict[str, Any]:
    """CPU used by the whole process over an idle sleep while the tool tracks in the background."""
    tool.import_()
    tool.setup()
    tool.start_run()
    time.sleep(float(opts.get("warm_s", 2.0)))  # start-up work (calibration, probing) ends
    cpu0, t0 = tree_cpu_s(), time.perf_counter()
    time.sleep(float(opts.get("seconds", 20.0)))
    cpu1, t1 = tree_cpu_s(), time.perf_counter()
    out = {
        "cpu_s": cpu1 - cpu0,
        "wall_s": t1 - t0,
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "threads": threads(),
        "child_processes": len(_descendants(os.getpid())),
        "rss_mb": rss_mb(),
    }
    out["report"] = tool.stop_run()
    tool.close()
    return out


class TorchMLP:
    """The same MLP in PyTorch on the CPU (autograd, ``torch.optim.SGD``), one intra-op thread."""

    def __init__(self, batch: int, dim: int, hidden: int, classes: int) -> None:
        import torch

        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(0)
        self.torch = torch
        self.x = torch.randn(batch, dim, generator=gen)
        self.y = torch.randint(0, classes, (batch,), generator=gen)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes)
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.loss = torch.nn.CrossEntropyLoss()

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


class MLP:
    """A two-layer numpy MLP trained with SGD on one fixed random batch (softmax cross-entropy)."""

    def __init__(self, batch: int, dim: int, hidden: int, classes: int) -> None:
        import numpy as np

        self.np = np
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch, dim), dtype=np.float32)
        self.y = rng.integers(0, classes, batch)
        self.rows = np.arange(batch)
        self.w1 = (rng.standard_normal((dim, hidden)) * 0.03).astype(np.float32)
        self.w2 = (rng.standard_normal((hidden, classes)) * 0.03).astype(np.float32)

    def step(self, lr: float = 0.01) -> float:
        np, x = self.np, self.x
        h = x @ self.w1
        a = np.maximum(h, 0)
        z = a @ self.w2
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-np.log(p[self.rows, self.y]).mean())
        p[self.rows, self.y] -= 1
        p /= len(x)
        grad_w2 = a.T @ p
        grad_a = p @ self.w2.T
        grad_a[h <= 0] = 0
        grad_w1 = x.T @ grad_a
        self.w1 -= lr * grad_w1
        self.w2 -= lr * grad_w2
        return loss


def train(tool: Tool, opts: dict[str, Any]) -> dict[str, Any]:
    """A fixed number of MLP steps, timed, with the tool measuring each step or the whole loop."""
    mode = opts.get("mode", "none")
    steps = int(opts.get("steps", 400))
    framework = opts.get("framework", "numpy")
    model_cls = TorchMLP if framework == "torch" else MLP
    model = model_cls(int(opts.get("batch", 256)), 784, int(opts.get("hidden", 1024)), 10)
    if tool.name != "none":
        tool.import_()
        tool.setup()
    for _ in range(10):  # warm-up: BLAS threads, caches, first-call costs
        model.step()
    out: dict[str, Any] = {"mode": mode, "steps": steps, "framework": framework}
    gc.collect()
    if mode == "run":
        tool.start_run()
        time.sleep(float(opts.get("warm_s", 1.0)))
    energies: list[float] = []
    cpu0, t0 = tree_cpu_s(), time.perf_counter()
    if mode == "step":
        # Blocks of steps measured and not measured, alternating (the order flips every
        # block), in this one process: their ratio is what measuring every step costs, free
        # of the drift between processes (which is larger than that cost on a shared VM).
        block = max(min(int(opts.get("block", 10)), steps), 1)
        measured_s = plain_s = 0.0
        pairs = []
        clock = time.perf_counter
        for b in range(max(steps // block, 1)):
            times = {}
            for measuring in (True, False) if b % 2 == 0 else (False, True):
                t = clock()
                if measuring:
                    for _ in range(block):
                        tool.begin()
                        model.step()
                        energy = tool.end()
                        if energy is not None:
                            energies.append(energy)
                else:
                    for _ in range(block):
                        model.step()
                times[measuring] = clock() - t
            measured_s += times[True]
            plain_s += times[False]
            pairs.append(times[True] / times[False])
        steps = max(steps // block, 1) * block
        out["steps"] = steps
        out["plain_s"] = plain_s
        out["paired_pct"] = (measured_s / plain_s - 1) * 100
        out["pair_median_pct"] = (sorted(pairs)[len(pairs) // 2] - 1) * 100
    else:
        for _ in range(steps):
            model.step()
    t1, cpu1 = time.perf_counter(), tree_cpu_s()
    out["loop_s"] = measured_s if mode == "step" else t1 - t0
    out["cpu_s"] = cpu1 - cpu0
    out["loss"] = model.step()
    if mode == "run":
        out["report"] = tool.stop_run()
    elif mode == "step":
        out["report"] = {"energy_j": tool.steps_energy_j(energies), "blocks": steps}
    out["rss_mb"] = rss_mb()
    if tool.name != "none":
        with contextlib.suppress(Exception):
            out["describe"] = tool.describe()
        tool.close()
    return out


TASKS = {"session": session, "idle": idle, "train": train}


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Route anything the tools print to stderr, so that stdout carries only the result."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in TASKS or argv[1] not in TOOLS:
        print(__doc__, file=sys.stderr)
        return 2
    task, name = argv[0], argv[1]
    opts: dict[str, Any] = json.loads(argv[2]) if len(argv) > 2 else {}
    tool = TOOLS[name](opts)
    with _quiet_stdout():
        result = TASKS[task](tool, opts)
    result["tool"] = name
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

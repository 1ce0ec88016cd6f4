"""Validate meter on a real NVIDIA GPU against NVML's energy counter, beside CodeCarbon and Zeus.

    python benchmarks/compare/gpu_validate.py                 # full run, about 6 minutes
    python benchmarks/compare/gpu_validate.py --quick         # about 2 minutes
    python benchmarks/compare/gpu_validate.py --into BENCHMARKS.md   # also replace its GPU section
    python benchmarks/compare/gpu_validate.py --dry-run       # no GPU needed: see below
    python benchmarks/compare/gpu_validate.py --render gpu_validate.json   # markdown from a result

Needs torch with CUDA, nvidia-ml-py and meter (run it from the repository root, or install
meter). CodeCarbon and Zeus are measured at the same time when they can be imported, and
skipped with a note when not. Writes ``--json`` (default ``gpu_validate.json``) and
``--markdown`` (default ``gpu_validate.md``).

What it measures, on one GPU (``--gpu``, a CUDA ordinal):

1. **Idle power** of the board: the energy counter over ``idle_s`` seconds with nothing running.
2. **Windows** of 10 ms to 60 s over three loads: ``steady`` (back-to-back bf16 matrix
   products), ``bursty`` (20-80 ms bursts of them, 20-150 ms pauses) and ``transformer`` (a
   small transformer trained with AdamW). Every window is measured at once by: meter on the
   energy counter (10 Hz sampler); meter's sampled method on the instantaneous power field at
   several sampling intervals; meter's sampled method on ``nvmlDeviceGetPowerUsage`` (a 1 s
   average on Ampere and newer); CodeCarbon (``start_task``/``stop_task``, GPU energy only);
   Zeus (``begin_window``/``end_window``, with and without ``approx_instant_energy``). Each
   tool's result is compared with the **reference** over that tool's own start and stop times.
3. **Power fields**: the instantaneous field and ``nvmlDeviceGetPowerUsage`` polled every 10 ms
   during the bursty load, against the counter's power: error and lag.
4. **Training slowdown**: the transformer step alone, with a CUDA sync every step, and with
   meter measuring every step (``sync_cuda`` off and on), Zeus and CodeCarbon every step.
5. **Dynamic energy** of each load: its energy minus idle power x time, from the reference and
   from meter (given the idle power measured in 1).

The reference: a separate process polls ``nvmlDeviceGetTotalEnergyConsumption`` about every
millisecond and keeps each change of the counter with the time it was seen; the energy between
two instants is interpolated linearly between the counter's updates around them. Its hard bound
is the "bracket": the energy between the last update before and the first after each instant
(outer) against the one between the first after and the last before (inner); for windows
shorter than a few update periods the bracket is wide, and the comparison says so.

``--dry-run`` runs the same code on a simulated GPU (``meter.testing``) with simulated loads
(no torch, no CUDA, no NVML library), to check the script where no GPU is at hand. Its figures
are simulated, labelled so in the output, and never written into BENCHMARKS.md. It also checks
the reference method against the simulator's true energy.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BEGIN = "<!-- gpu:begin (written by benchmarks/compare/gpu_validate.py) -->"
END = "<!-- gpu:end -->"
JOULES_PER_KWH = 3.6e6
LOADS = ("steady", "bursty", "transformer")

#: Window lengths (s) and how many windows of each, per load; a load not listed for a length
#: skips it (60 s windows only on the steady load, to keep the run short).
PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "windows": {0.01: 30, 0.1: 20, 1.0: 8, 10.0: 3, 60.0: 1},
        "long_only": {60.0: ("steady",)},
        "idle_s": 20.0,
        "trace_s": 10.0,
        "train_steps": 100,
        "train_rounds": 3,
    },
    "quick": {
        "windows": {0.01: 10, 0.1: 8, 1.0: 4, 10.0: 1},
        "long_only": {},
        "idle_s": 8.0,
        "trace_s": 5.0,
        "train_steps": 30,
        "train_rounds": 2,
    },
    "dry": {
        "windows": {0.01: 5, 0.1: 3, 1.0: 2},
        "long_only": {},
        "idle_s": 1.0,
        "trace_s": 1.0,
        "train_steps": 5,
        "train_rounds": 1,
    },
}
INTERVALS_S = (0.01, 0.1, 0.5)  # sampling intervals of meter's sampled method
POLL_S = 0.001  # reference poller
MAX_TIMING_S = 0.003  # windows whose reference used a worse-timed counter update are left out
LEAD_IN_S = 0.5  # load before the first window of each load, and after the last measurement
TRACE_S = 0.01  # power-field poller


def _import_meter() -> Any:
    try:
        import meter
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import meter
    return meter


# -- the reference: the energy counter, polled -----------------------------------------------------


def poll_counter(read: Callable[[], int], period_s: float, stop: Callable[[], bool]) -> list:
    """Poll ``read`` (mJ) every ``period_s`` until ``stop()``; each change of the value as
    ``(t, half_width, joules)``: the counter changed between the last read that saw the old value
    and the first that saw the new one, ``t`` is the middle of that span."""
    events: list[tuple[float, float, float]] = []
    t0 = time.perf_counter()
    last = read()
    t1 = time.perf_counter()
    prev_mid = (t0 + t1) / 2
    events.append((prev_mid, (t1 - t0) / 2, last / 1000.0))
    while not stop():
        t0 = time.perf_counter()
        value = read()
        t1 = time.perf_counter()
        mid = (t0 + t1) / 2
        if value != last:
            events.append(((prev_mid + mid) / 2, (mid - prev_mid) / 2, value / 1000.0))
            last = value
        prev_mid = mid
        time.sleep(period_s)
    return events


def _poll_process(nvml_index: int, period_s: float, conn: Any) -> None:
    """The reference poller in its own process (real GPU): no GIL shared with the workload."""
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
    conn.send("ready")
    events = poll_counter(
        lambda: int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)), period_s, conn.poll
    )
    conn.recv()
    conn.send(events)
    pynvml.nvmlShutdown()


class Poller:
    """Runs `poll_counter` in a thread (simulated GPU) or a spawned process (real GPU)."""

    def __init__(self, read: Callable[[], int] | None, nvml_index: int) -> None:
        self.events: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        if read is not None:
            self._thread: threading.Thread | None = threading.Thread(
                target=lambda: self.events.extend(poll_counter(read, POLL_S, self._stop.is_set)),
                name="reference-poller",
                daemon=True,
            )
            self._thread.start()
            self._proc = None
        else:
            self._thread = None
            ctx = multiprocessing.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_poll_process, args=(nvml_index, POLL_S, child))
            self._proc.start()
            if not self._conn.poll(60) or self._conn.recv() != "ready":
                raise RuntimeError("the reference poller process did not start")

    def stop(self) -> Reference:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        elif self._proc is not None:
            self._conn.send("stop")
            self.events = [tuple(e) for e in self._conn.recv()]  # type: ignore[misc]
            self._proc.join(10)
        return Reference(self.events)


class Reference:
    """Energy between two instants from the polled counter updates (see the module doc)."""

    def __init__(self, events: Sequence[tuple[float, float, float]]) -> None:
        self.t = [e[0] for e in events]
        self.half = [e[1] for e in events]
        self.j = [e[2] for e in events]

    def update_period_s(self) -> float | None:
        gaps = [b - a for a, b in zip(self.t[1:], self.t[2:], strict=False)]
        return statistics.median(gaps) if gaps else None

    def resolution_s(self) -> dict[str, float] | None:
        """How precisely the updates were timed: median, p99 and max of the half-widths."""
        half = sorted(self.half[1:])
        if not half:
            return None
        return {
            "median": statistics.median(half),
            "p99": half[min(len(half) - 1, int(0.99 * len(half)))],
            "max": half[-1],
        }

    def energy_at(self, t: float) -> float | None:
        i = bisect.bisect_right(self.t, t) - 1
        if i < 0 or i + 1 >= len(self.t):
            return None
        t0, t1, j0, j1 = self.t[i], self.t[i + 1], self.j[i], self.j[i + 1]
        return j0 + (j1 - j0) * (t - t0) / (t1 - t0)

    def between(self, a: float, b: float) -> tuple[float | None, float | None]:
        """``(interpolated joules, bracket half-width in joules)`` between ``a`` and ``b``."""
        ea, eb = self.energy_at(a), self.energy_at(b)
        if ea is None or eb is None:
            return None, None
        before_a = bisect.bisect_right(self.t, a) - 1
        after_a = before_a + 1
        before_b = bisect.bisect_right(self.t, b) - 1
        after_b = before_b + 1
        outer = self.j[after_b] - self.j[before_a]
        inner = max(self.j[before_b] - self.j[after_a], 0.0) if before_b >= after_a else 0.0
        return eb - ea, (outer - inner) / 2

    def timing_s(self, a: float, b: float) -> float:
        """The worst timing half-width of the updates the interpolation at ``a`` and ``b`` used."""
        out = 0.0
        for t in (a, b):
            i = bisect.bisect_right(self.t, t) - 1
            out = max(out, *self.half[max(i, 0) : i + 2])
        return out

    def power_series(self) -> tuple[list[float], list[float]]:
        """Average power of each update interval, at its middle."""
        mids = [(a + b) / 2 for a, b in zip(self.t, self.t[1:], strict=False)]
        watts = [
            (j1 - j0) / (t1 - t0) if t1 > t0 else 0.0
            for t0, t1, j0, j1 in zip(self.t, self.t[1:], self.j, self.j[1:], strict=False)
        ]
        return mids, watts


# -- loads -----------------------------------------------------------------------------------------


class TorchLoads:
    """The real loads, on one CUDA device."""

    def __init__(self, ordinal: int, quick: bool) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(f"cuda:{ordinal}")
        torch.cuda.set_device(self.device)
        n = 8192
        self.a = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        self.b = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        for _ in range(5):
            self.a @ self.b
        self.sync()
        t0 = time.perf_counter()
        for _ in range(20):
            self.a @ self.b
        self.sync()
        self.matmul_s = (time.perf_counter() - t0) / 20
        self.chunk = max(1, int(0.002 / self.matmul_s))  # ~2 ms between syncs
        self.rng = random.Random(0)

        nn = torch.nn
        d, vocab = 1024, 8192
        self.model = nn.Sequential(
            nn.Embedding(vocab, d),
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(
                    d, nhead=16, dim_feedforward=4 * d, batch_first=True, norm_first=True
                ),
                num_layers=6,
            ),
            nn.Linear(d, vocab),
        ).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.tokens = torch.randint(0, vocab, (16, 256), device=self.device)
        self.vocab = vocab
        for _ in range(3):
            self.train_step()
        self.sync()
        t0 = time.perf_counter()
        for _ in range(5):
            self.train_step()
        self.sync()
        self.step_s = (time.perf_counter() - t0) / 5

    def describe(self) -> dict[str, Any]:
        return {
            "matmul": "8192x8192 bf16 @ 8192x8192 bf16",
            "matmul_ms": self.matmul_s * 1e3,
            "transformer": "6 layers, d=1024, 16 heads, batch 16 x 256 tokens, bf16 autocast, "
            "AdamW",
            "transformer_step_ms": self.step_s * 1e3,
        }

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def _matmuls(self, until: float) -> None:
        while time.perf_counter() < until:
            for _ in range(self.chunk):
                self.a @ self.b
            self.sync()

    def begin(self, load: str) -> None:
        """Start ``load``; `run` continues it, so windows fall inside a running load."""
        self.load = load
        self.burst_on, self.switch_at = True, time.perf_counter() + self.rng.uniform(0.02, 0.08)

    def run(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        if self.load == "steady":
            self._matmuls(end)
        elif self.load == "transformer":
            while time.perf_counter() < end:
                self.train_step()
                self.sync()
        else:  # bursty: 20-80 ms of matrix products, 20-150 ms pauses
            while (now := time.perf_counter()) < end:
                if now >= self.switch_at:
                    self.burst_on = not self.burst_on
                    span = (0.02, 0.08) if self.burst_on else (0.02, 0.15)
                    self.switch_at = now + self.rng.uniform(*span)
                until = min(self.switch_at, end)
                if self.burst_on:
                    self._matmuls(until)
                else:
                    time.sleep(max(until - time.perf_counter(), 0.0))

    def end(self) -> None:
        self.sync()

    def train_step(self) -> None:
        torch = self.torch
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = self.model(self.tokens)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, self.vocab), self.tokens[:, 1:].reshape(-1)
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class SimLoads:
    """Simulated loads: each sets the simulated GPU's power trace while it runs (dry run)."""

    IDLE_W = 60.0

    def __init__(self) -> None:
        self._starts: list[float] = [-math.inf]
        self._fns: list[Callable[[float], float]] = [lambda t: self.IDLE_W]
        self.origin = 0.0  # the simulated GPU's clock origin (set once it exists)
        self.step_s = 0.02
        # Bursty: 20-80 ms at 400 W, 20-150 ms idle, drawn once (an hour of it), as a function
        # of time (a regular pattern would alias with the sampling intervals).
        rng, t, on = random.Random(0), 0.0, True
        self._switches: list[float] = []
        while t < 3600:
            t += rng.uniform(0.02, 0.08) if on else rng.uniform(0.02, 0.15)
            self._switches.append(t)
            on = not on

    def power(self, t: float) -> float:
        return self._fns[bisect.bisect_right(self._starts, t) - 1](t)

    def _bursty(self, t: float) -> float:
        return 400.0 if bisect.bisect_right(self._switches, t) % 2 == 0 else self.IDLE_W

    def _set(self, fn: Callable[[float], float]) -> None:
        # 2 ms ahead: nothing can have integrated the trace that far yet.
        start = time.perf_counter() - self.origin + 0.002
        self._fns.append(fn)
        self._starts.append(start)

    def describe(self) -> dict[str, Any]:
        return {
            "steady": "400 W constant",
            "bursty": "400 W for 20-80 ms, 60 W for 20-150 ms (random)",
            "transformer": "250 ± 150 W sine, 3 Hz",
        }

    def sync(self) -> None:
        pass

    def begin(self, load: str) -> None:
        traces: dict[str, Callable[[float], float]] = {
            "steady": lambda t: 400.0,
            "bursty": self._bursty,
            "transformer": lambda t: 250.0 + 150.0 * math.sin(2 * math.pi * 3 * t),
        }
        self._set(traces[load])

    def run(self, seconds: float) -> None:
        time.sleep(seconds)

    def end(self) -> None:
        self._set(lambda t: self.IDLE_W)

    def train_step(self) -> None:
        self.begin("transformer")
        time.sleep(self.step_s)
        self.end()


# -- the tools under test --------------------------------------------------------------------------


class Masked:
    """A pynvml-like module that hides the energy counter and/or the instantaneous power field,
    so that meter takes its sampled path on a GPU that has both."""

    def __init__(self, nvml: Any, *, counter: bool, instant: bool) -> None:
        self._nvml = nvml
        self._counter = counter
        self._instant = instant

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nvml, name)

    def _unsupported(self) -> BaseException:
        import pynvml

        return pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if not self._counter:
            raise self._unsupported()
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: Any) -> Any:
        if not self._instant:
            raise self._unsupported()
        return self._nvml.nvmlDeviceGetFieldValues(handle, field_ids)


@dataclass
class Tool:
    """One way of measuring a window: ``begin()``, then ``end()`` -> joules of the GPU."""

    key: str
    label: str
    begin: Callable[[], None]
    end: Callable[[], tuple[float | None, bool]]
    close: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)
    #: meter tools: the `Meter` ("meter") and the last window's device result ("last").
    state: dict[str, Any] = field(default_factory=dict)


def meter_tool(key: str, label: str, m: Any, device: str) -> Tool:
    state: dict[str, Any] = {"meter": m}

    def begin() -> None:
        state["w"] = w = m.measure("window")
        w.__enter__()

    def end() -> tuple[float | None, bool]:
        w = state.pop("w")
        w.__exit__(None, None, None)
        d = w.result.devices.get(device)
        if d is None or d.error:
            return None, False
        state["last"] = d
        return d.energy_j, bool(d.approximate)

    return Tool(key, label, begin, end, m.close, [f"{d.key}: {d.method}" for d in m.devices], state)


def codecarbon_tool(nvml_index: int) -> Tool:
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(
        country_iso_code="DEU", save_to_file=False, log_level="error", gpu_ids=[nvml_index]
    )
    tracker.start_task("warm-up")  # its first task probes the hardware (about a second)
    tracker.stop_task()

    def end() -> tuple[float | None, bool]:
        data = tracker.stop_task()
        return (None if data is None else data.gpu_energy * JOULES_PER_KWH), False

    import codecarbon

    return Tool(
        "codecarbon",
        f"CodeCarbon {codecarbon.__version__} (task API, GPU energy)",
        lambda: tracker.start_task(),
        end,
        lambda: None,
    )


def zeus_tool(ordinal: int, approx: bool) -> Tool:
    from zeus.monitor import ZeusMonitor

    z = ZeusMonitor(gpu_indices=[ordinal], cpu_indices=[], approx_instant_energy=approx)
    key = "zeus-approx" if approx else "zeus"

    def end() -> tuple[float | None, bool]:
        m = z.end_window(key, sync_execution=False)
        return float(m.gpu_energy.get(ordinal, float("nan"))), False

    version = importlib.metadata.version("zeus")
    return Tool(
        key,
        f"Zeus {version}" + (" (`approx_instant_energy=True`)" if approx else ""),
        lambda: z.begin_window(key, sync_execution=False),
        end,
    )


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    plan: dict[str, Any]
    meter: Any
    nvml: Any
    handle: Any
    nvml_index: int
    device: str
    loads: Any
    truth: Callable[[float, float], float] | None = None
    notes: list[str] = field(default_factory=list)


def setup(args: argparse.Namespace) -> tuple[Bench, Callable[[], None]]:
    meter = _import_meter()
    from meter.devices.nvml import open_gpus

    plan = PLANS["dry" if args.dry_run else "quick" if args.quick else "full"]
    if args.dry_run:
        from meter.testing import SimulatedGPU, simulated_gpus

        loads: Any = SimLoads()
        gpu = SimulatedGPU(loads.power, counter_update_s=0.1, model="Simulated GPU (dry run)")
        loads.origin = gpu.created_s
        ctx = simulated_gpus([gpu])
        nvml = ctx.__enter__()
        nvml.nvmlInit()
        opened, _, _ = open_gpus(nvml=nvml, visible=None, select=[0])
        bench = Bench(args, plan, meter, nvml, None, 0, "gpu:0", loads, gpu.energy_between_j)

        def cleanup() -> None:
            ctx.__exit__(None, None, None)
    else:
        import pynvml

        nvml = pynvml
        pynvml.nvmlInit()
        opened, unavailable, _ = open_gpus(select=[args.gpu])
        if not opened:
            raise SystemExit(f"GPU {args.gpu} cannot be metered: {unavailable}")
        loads = TorchLoads(args.gpu, args.quick)
        bench = Bench(args, plan, meter, nvml, None, 0, f"gpu:{args.gpu}", loads)

        def cleanup() -> None:
            pass

    info = opened[0].info
    bench.nvml_index = info.index if info.index is not None else 0
    bench.handle = nvml.nvmlDeviceGetHandleByIndex(bench.nvml_index)
    return bench, cleanup


def _tools(bench: Bench, idle_w: float) -> list[Tool]:
    meter, nvml, args = bench.meter, bench.nvml, bench.args
    ordinal = 0 if args.dry_run else args.gpu
    common: dict[str, Any] = {
        "gpus": [ordinal],
        "cpu": False,
        "idle_file": "/nonexistent/gpu-validate-idle.json",
        "idle_power_w": {bench.device: idle_w},
        "carbon": False,
    }
    if args.dry_run:
        common["nvml"] = nvml
    variants: list[tuple[str, str, float, bool, bool]] = [
        ("meter", "meter, energy counter (10 Hz sampler)", 0.1, True, True),
        *(
            (
                f"sampled-{iv * 1e3:g}ms",
                f"meter, sampled: instantaneous field every {iv * 1e3:g} ms",
                iv,
                False,
                True,
            )
            for iv in INTERVALS_S
        ),
        (
            "sampled-avg-100ms",
            "meter, sampled: `nvmlDeviceGetPowerUsage` every 100 ms",
            0.1,
            False,
            False,
        ),
    ]
    tools = []
    for key, label, interval, counter, instant in variants:
        base = nvml if args.dry_run else __import__("pynvml")
        options = {**common, "interval_s": interval}
        if not (counter and instant):
            options["nvml"] = Masked(base, counter=counter, instant=instant)
        m = meter.Meter(**options).start()
        tools.append(meter_tool(key, label, m, bench.device))
    if args.dry_run:
        bench.notes.append(
            "CodeCarbon and Zeus are not run in a dry run: they read the real NVML library, "
            "not meter's simulator."
        )
        return tools
    for name, make in (
        ("CodeCarbon", lambda: codecarbon_tool(bench.nvml_index)),
        ("Zeus", lambda: zeus_tool(args.gpu, False)),
        ("Zeus (approx_instant_energy)", lambda: zeus_tool(args.gpu, True)),
    ):
        try:
            tools.append(make())
        except Exception as error:  # not installed, or refuses this machine: say so, go on
            bench.notes.append(f"{name} skipped: {type(error).__name__}: {error}")
    return tools


def measure_idle(bench: Bench) -> dict[str, Any]:
    """Idle power over ``idle_s``: the times (the reference gives the energy later), the mean of
    ``nvmlDeviceGetPowerUsage``, and two direct counter reads (``direct_w``, meter's idle
    baseline: stale by up to one counter update at each end, so within a percent or so)."""
    time.sleep(0.5 if bench.args.dry_run else 3.0)  # let the board settle after the warm-up
    read = bench.nvml.nvmlDeviceGetTotalEnergyConsumption
    usage: list[float] = []
    t0, e0 = time.perf_counter(), read(bench.handle)
    end = t0 + bench.plan["idle_s"]
    while time.perf_counter() < end:
        usage.append(bench.nvml.nvmlDeviceGetPowerUsage(bench.handle) / 1000.0)
        time.sleep(0.1)
    t1, e1 = time.perf_counter(), read(bench.handle)
    return {
        "t0": t0,
        "t1": t1,
        "power_usage_mean_w": statistics.fmean(usage),
        "direct_w": (e1 - e0) / 1000.0 / (t1 - t0),
    }


def run_windows(bench: Bench, tools: list[Tool]) -> list[dict[str, Any]]:
    plan = bench.plan
    rows: list[dict[str, Any]] = []
    for load in LOADS:
        bench.loads.begin(load)
        bench.loads.run(LEAD_IN_S)  # the windows fall inside a running load
        for length, count in plan["windows"].items():
            only = plan["long_only"].get(length)
            if only is not None and load not in only:
                continue
            for i in range(count):
                order = tools[i % len(tools) :] + tools[: i % len(tools)]  # rotate who is first
                opened: dict[str, tuple[float, float]] = {}
                for tool in order:
                    a = time.perf_counter()
                    tool.begin()
                    opened[tool.key] = (a, time.perf_counter())
                bench.loads.run(length)
                for tool in reversed(order):
                    c = time.perf_counter()
                    try:
                        energy, approximate = tool.end()
                    except Exception as error:
                        energy, approximate = None, False
                        bench.notes.append(f"{tool.label}: {type(error).__name__}: {error}")
                    d = time.perf_counter()
                    a, b = opened[tool.key]
                    row = {
                        "load": load,
                        "window_s": length,
                        "tool": tool.key,
                        "start": (a + b) / 2,
                        "end": (c + d) / 2,
                        "edge_s": (b - a) / 2 + (d - c) / 2,
                        "energy_j": energy,
                        "approximate": approximate,
                    }
                    last = tool.state.get("last") if tool.key == "meter" else None
                    if last is not None and last.dynamic_energy_j is not None:
                        row["dynamic_energy_j"] = last.dynamic_energy_j
                    rows.append(row)
        bench.loads.end()
    return rows


def trace_fields(bench: Bench) -> dict[str, Any]:
    """Poll both power fields every 10 ms while the bursty load runs."""
    import pynvml

    nvml, handle = bench.nvml, bench.handle
    samples: list[tuple[float, float | None, float]] = []
    stop = threading.Event()
    field_ids = [pynvml.NVML_FI_DEV_POWER_INSTANT]

    def poll() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            instant: float | None = None
            try:
                value = nvml.nvmlDeviceGetFieldValues(handle, field_ids)[0]
                if value.nvmlReturn == pynvml.NVML_SUCCESS:
                    instant = float(value.value.uiVal) / 1000.0
            except pynvml.NVMLError:
                pass
            average = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            samples.append(((t0 + time.perf_counter()) / 2, instant, average))
            time.sleep(TRACE_S)

    thread = threading.Thread(target=poll, name="field-poller", daemon=True)
    t0 = time.perf_counter()
    thread.start()
    bench.loads.begin("bursty")
    bench.loads.run(bench.plan["trace_s"])
    bench.loads.end()
    stop.set()
    thread.join()
    return {"t0": t0, "t1": time.perf_counter(), "samples": samples}


def training(bench: Bench, m: Any) -> dict[str, Any]:
    """Per-step time of the transformer step under each mode, rounds interleaved."""
    loads, plan, device = bench.loads, bench.plan, bench.device
    extra: dict[str, Callable[[], Any]] = {}
    if not bench.args.dry_run:
        with contextlib.suppress(Exception):
            from zeus.monitor import ZeusMonitor

            z = ZeusMonitor(gpu_indices=[bench.args.gpu], cpu_indices=[])
            extra["zeus (sync_execution=True, its default)"] = lambda: _zeus_step(z, loads)
        with contextlib.suppress(Exception):
            from codecarbon import OfflineEmissionsTracker

            cc = OfflineEmissionsTracker(
                country_iso_code="DEU",
                save_to_file=False,
                log_level="error",
                gpu_ids=[bench.nvml_index],
            )
            cc.start_task()
            cc.stop_task()
            extra["CodeCarbon (start_task/stop_task)"] = lambda: _cc_step(cc, loads)

    energies: list[float] = []

    def meter_step(sync: bool) -> None:
        with m.measure("step", sync_cuda=sync) as w:
            loads.train_step()
        d = w.result.devices.get(device)
        if d is not None:
            energies.append(d.energy_j)

    def plain_sync() -> None:
        loads.train_step()
        loads.sync()

    modes: dict[str, Callable[[], Any]] = {
        "no metering": loads.train_step,
        "no metering, CUDA sync every step": plain_sync,
        "meter every step, sync_cuda=False": lambda: meter_step(False),
        "meter every step, sync_cuda=True": lambda: meter_step(True),
        **extra,
    }
    rounds: list[dict[str, Any]] = []
    keys = list(modes)
    for r in range(plan["train_rounds"]):
        row: dict[str, Any] = {}
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            step = modes[key]
            for _ in range(2):
                step()
            loads.sync()
            energies.clear()
            t0 = time.perf_counter()
            for _ in range(plan["train_steps"]):
                step()
            loads.sync()
            t1 = time.perf_counter()
            row[key] = {"t0": t0, "t1": t1, "step_ms": (t1 - t0) / plan["train_steps"] * 1e3}
            if key.startswith("meter") and energies:
                row[key]["meter_energy_j"] = sum(energies)
        rounds.append(row)
    return {"modes": keys, "rounds": rounds, "steps": plan["train_steps"]}


def _zeus_step(z: Any, loads: Any) -> None:
    z.begin_window("step")
    loads.train_step()
    z.end_window("step")


def _cc_step(cc: Any, loads: Any) -> None:
    cc.start_task()
    loads.train_step()
    cc.stop_task()


# -- analysis --------------------------------------------------------------------------------------


def analyse(
    bench: Bench,
    ref: Reference,
    idle: dict[str, Any],
    windows: list[dict[str, Any]],
    trace: dict[str, Any],
    train: dict[str, Any],
) -> dict[str, Any]:
    idle_j, _ = ref.between(idle["t0"], idle["t1"])
    idle_w = None if idle_j is None else idle_j / (idle["t1"] - idle["t0"])
    out: dict[str, Any] = {
        "counter_update_period_s": ref.update_period_s(),
        "reference_resolution_s": ref.resolution_s(),
        "counter_updates": len(ref.t),
        "idle": {
            "counter_w": idle_w,
            "power_usage_mean_w": idle["power_usage_mean_w"],
            "direct_w": idle["direct_w"],
            "seconds": idle["t1"] - idle["t0"],
        },
    }
    for row in windows:
        e_ref, bracket = ref.between(row["start"], row["end"])
        row["duration_s"] = row["end"] - row["start"]
        row["ref_j"] = e_ref
        row["bracket_j"] = bracket
        row["ref_timing_s"] = ref.timing_s(row["start"], row["end"])
        # A counter update the poller saw late (it was not scheduled) misplaces the reference:
        # such windows are left out of the comparison, and counted.
        row["ref_excluded"] = row["ref_timing_s"] > MAX_TIMING_S
        if (
            e_ref
            and not row["ref_excluded"]
            and row["energy_j"] is not None
            and math.isfinite(row["energy_j"])
        ):
            row["err_pct"] = 100 * (row["energy_j"] - e_ref) / e_ref
            row["bracket_pct"] = 100 * (bracket or 0.0) / e_ref
        if bench.truth is not None:
            true_j = bench.truth(row["start"], row["end"])
            row["true_j"] = true_j
            if e_ref and true_j:
                row["ref_err_pct"] = 100 * (e_ref - true_j) / true_j
            if row["energy_j"] is not None and true_j:
                row["true_err_pct"] = 100 * (row["energy_j"] - true_j) / true_j
        if idle_w is not None and e_ref is not None:
            row["ref_dynamic_j"] = e_ref - idle_w * row["duration_s"]
    out["windows"] = windows

    # Power fields against the counter's power (the update interval containing each sample).
    _, watts = ref.power_series()
    starts = ref.t
    samples = trace["samples"]

    def counter_w(t: float) -> float | None:
        i = bisect.bisect_right(starts, t) - 1
        return watts[i] if 0 <= i < len(watts) else None

    fields_out: dict[str, Any] = {}
    for index, name in ((1, "instant"), (2, "average")):
        pts = [(s[0], s[index]) for s in samples if s[index] is not None]
        if not pts:
            fields_out[name] = None
            continue

        def mad(lag: float, pts: list[tuple[float, float]] = pts) -> float | None:
            diffs = [abs(w - c) for t, w in pts if (c := counter_w(t - lag)) is not None]
            return statistics.fmean(diffs) if diffs else None

        lags = [k * 0.01 for k in range(0, 151)]
        scored = [(v, lag) for lag in lags if (v := mad(lag)) is not None]
        best = min(scored) if scored else (None, None)
        counter_mean = [c for t, _ in pts if (c := counter_w(t)) is not None]
        fields_out[name] = {
            "samples": len(pts),
            "mean_w": statistics.fmean(w for _, w in pts),
            "counter_mean_w": statistics.fmean(counter_mean) if counter_mean else None,
            "mad_w": mad(0.0),
            "best_lag_s": best[1],
            "mad_at_best_lag_w": best[0],
        }
    out["fields"] = fields_out

    # Training: per-step times and ratios within each round; energy per step.
    rounds = train["rounds"]
    modes_out = []
    for key in train["modes"]:
        ratios = [
            row[key]["step_ms"] / row["no metering"]["step_ms"]
            for row in rounds
            if key in row and "no metering" in row
        ]
        ref_j = []
        meter_j = []
        for row in rounds:
            if key in row:
                e, _ = ref.between(row[key]["t0"], row[key]["t1"])
                if e is not None:
                    ref_j.append(e / train["steps"])
                if "meter_energy_j" in row[key]:
                    meter_j.append(row[key]["meter_energy_j"] / train["steps"])
        modes_out.append(
            {
                "mode": key,
                "step_ms": [row[key]["step_ms"] for row in rounds if key in row],
                "ratio": ratios,
                "ref_j_per_step": ref_j,
                "meter_j_per_step": meter_j,
            }
        )
    out["training"] = {"steps": train["steps"], "rounds": len(rounds), "modes": modes_out}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    bench, cleanup = setup(args)
    try:
        poller_read = (
            (lambda: int(bench.nvml.nvmlDeviceGetTotalEnergyConsumption(bench.handle)))
            if args.dry_run
            else None
        )
        poller = Poller(poller_read, bench.nvml_index)
        try:
            idle = measure_idle(bench)
            tools = _tools(bench, idle["direct_w"])
            labels = {t.key: t.label for t in tools}
            methods = {t.key: t.notes for t in tools}
            windows = run_windows(bench, tools)
            trace = trace_fields(bench)
            for tool in tools[1:]:
                with contextlib.suppress(Exception):
                    tool.close()
            counter_meter = tools[0]  # meter on the counter, kept for the training loop
            train = training(bench, counter_meter.state["meter"])
            counter_meter.close()
            time.sleep(LEAD_IN_S)  # the reference needs a counter update after the last window
        finally:
            ref = poller.stop()
        result = analyse(bench, ref, idle, windows, trace, train)
    finally:
        cleanup()
    result.update(
        {
            "dry_run": bool(args.dry_run),
            "quick": bool(args.quick),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": time.perf_counter() - t_start,
            "machine": machine(bench),
            "loads": bench.loads.describe(),
            "tools": labels,
            "tool_methods": methods,
            "intervals_s": list(INTERVALS_S),
            "poll_s": POLL_S,
            "notes": bench.notes,
            "plan": {k: v for k, v in bench.plan.items() if k not in ("windows", "long_only")},
        }
    )
    return result


def machine(bench: Bench) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    nvml = bench.nvml
    info: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu_count": os.cpu_count(),
        "meter": getattr(bench.meter, "__version__", "?"),
        "nvidia-ml-py": version("nvidia-ml-py"),
        "codecarbon": version("codecarbon"),
        "zeus": version("zeus"),
        "torch": version("torch"),
    }
    with contextlib.suppress(Exception):
        name = nvml.nvmlDeviceGetName(bench.handle)
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    with contextlib.suppress(Exception):
        driver = nvml.nvmlSystemGetDriverVersion()
        info["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
    with contextlib.suppress(Exception):
        info["power_limit_w"] = nvml.nvmlDeviceGetEnforcedPowerLimit(bench.handle) / 1000.0
    if not bench.args.dry_run:
        import torch

        info["cuda"] = torch.version.cuda
    return info


# -- rendering -------------------------------------------------------------------------------------


def _s(values: Sequence[float]) -> dict[str, float] | None:
    data = sorted(v for v in values if v is not None and math.isfinite(v))
    if not data:
        return None
    return {"median": statistics.median(data), "min": data[0], "max": data[-1], "n": len(data)}


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _window_label(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1e3:g} ms"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _abs_err(rows: list[dict[str, Any]], key: str = "err_pct") -> str:
    s = _s([abs(r[key]) for r in rows if r.get(key) is not None])
    if s is None:
        return "–"
    return f"{s['median']:.2f} (max {s['max']:.2f})"


def render(result: dict[str, Any]) -> str:
    dry = result["dry_run"]
    m = result["machine"]
    tools: dict[str, str] = result["tools"]
    title = (
        "## Real GPU: DRY RUN on a simulated GPU (not GPU results)"
        if dry
        else f"## Real GPU: {m.get('gpu', 'GPU')}"
    )
    lines = [
        BEGIN if not dry else "<!-- gpu_validate dry run: not for BENCHMARKS.md -->",
        title,
        "",
    ]
    if dry:
        lines += [
            "**Every figure below is from meter's simulator (`--dry-run`): it checks that the "
            "script runs end to end, and the reference method against the simulator's true "
            "energy. None of it is a measurement of a GPU.**",
            "",
        ]
    command = "python benchmarks/compare/gpu_validate.py" + (
        " --dry-run" if dry else " --quick" if result["quick"] else ""
    )
    lines += [
        f"Generated by `{command}` on {result['date']} ({result['wall_s'] / 60:.1f} min).",
        "",
    ]
    lines += _table(
        ["", ""],
        [
            ["GPU", f"{m.get('gpu', '?')}, power limit {_f(m.get('power_limit_w'), 0)} W"],
            ["Driver / CUDA", f"{m.get('driver', '?')} / {m.get('cuda', '–')}"],
            ["Python / OS", f"{m['python']} / {m['os']}, {m['cpu_count']} CPUs"],
            [
                "Versions",
                f"meter {m['meter']}, nvidia-ml-py {m['nvidia-ml-py']}, torch {m['torch']}, "
                f"CodeCarbon {m['codecarbon']}, Zeus {m['zeus']}",
            ],
            [
                "Energy counter",
                f"updates every {_f((result['counter_update_period_s'] or 0) * 1e3, 1)} ms "
                f"(median of {result['counter_updates']:,} updates seen); the reference poller "
                + _resolution(result["reference_resolution_s"]),
            ],
            ["Loads", "; ".join(f"{k}: {v}" for k, v in result["loads"].items())],
        ],
    )
    for note in result["notes"]:
        lines += ["", f"- {note}"]

    idle = result["idle"]
    lines += [
        "",
        "### Idle power and dynamic energy",
        "",
        f"Idle (nothing running, {idle['seconds']:.0f} s): **{_f(idle['counter_w'], 1)} W** from "
        f"the energy counter; `nvmlDeviceGetPowerUsage` read {_f(idle['power_usage_mean_w'], 1)} "
        "W on average.",
        "",
    ]
    windows = result["windows"]
    longest: dict[str, float] = {}
    for r in windows:
        longest[r["load"]] = max(longest.get(r["load"], 0.0), r["window_s"])
    rows = []
    for load, length in longest.items():
        sel = [
            r
            for r in windows
            if r["load"] == load and r["window_s"] == length and r["tool"] == "meter"
        ]
        ref = _s([r["ref_j"] / r["duration_s"] for r in sel if r.get("ref_j")])
        dyn_ref = _s([r["ref_dynamic_j"] for r in sel if r.get("ref_dynamic_j") is not None])
        dyn_meter = _s(
            [r["dynamic_energy_j"] for r in sel if r.get("dynamic_energy_j") is not None]
        )
        share = (
            None if not ref or not dyn_ref else 100 * dyn_ref["median"] / (ref["median"] * length)
        )
        rows.append(
            [
                load,
                _window_label(length),
                _f(ref and ref["median"], 1),
                _f(dyn_ref and dyn_ref["median"], 1),
                _f(dyn_meter and dyn_meter["median"], 1),
                _f(share, 0),
            ]
        )
    lines += _table(
        [
            "load",
            "window",
            "average power W (reference)",
            "dynamic energy J (reference)",
            "dynamic energy J (meter)",
            "dynamic share %",
        ],
        rows,
    )

    lines += [
        "",
        "### Windows against the energy counter",
        "",
        "Median absolute error % (max) of each tool against the reference over its own start "
        "and stop; `n` windows per cell; the bracket is the reference's hard bound (median, "
        "± %). Windows shorter than the counter's update period are power x time for every "
        "tool, and the reference itself is interpolated there. Windows whose reference rests on "
        f"a counter update the poller timed worse than ± {MAX_TIMING_S * 1e3:g} ms are left "
        "out (counted in `n`).",
        "",
    ]
    keys = [k for k in tools if any(r["tool"] == k for r in windows)]
    header = ["load", "window", "n", "bracket ± %", *(tools[k] for k in keys)]
    if dry:
        header.append("reference vs true energy %")
    rows = []
    for load in LOADS:
        for length in sorted({r["window_s"] for r in windows if r["load"] == load}):
            cell = [r for r in windows if r["load"] == load and r["window_s"] == length]
            base = [r for r in cell if r["tool"] == "meter"]
            bracket = _s([r.get("bracket_pct") for r in base])
            left_out = sum(1 for r in base if r.get("ref_excluded"))
            row = [
                load,
                _window_label(length),
                str(len(base)) + (f" ({left_out} left out)" if left_out else ""),
                _f(bracket and bracket["median"], 2),
                *(_abs_err([r for r in cell if r["tool"] == k]) for k in keys),
            ]
            if dry:
                row.append(_abs_err(base, "ref_err_pct"))
            rows.append(row)
    lines += _table(header, rows)
    if dry:
        lines += [
            "",
            "Against the simulator's true energy instead of the reference (median abs % (max)):",
            "",
        ]
        rows = []
        for load in LOADS:
            for length in sorted({r["window_s"] for r in windows if r["load"] == load}):
                cell = [r for r in windows if r["load"] == load and r["window_s"] == length]
                rows.append(
                    [
                        load,
                        _window_label(length),
                        *(
                            _abs_err([r for r in cell if r["tool"] == k], "true_err_pct")
                            for k in keys
                        ),
                    ]
                )
        lines += _table(["load", "window", *(tools[k] for k in keys)], rows)

    lines += ["", "### Budgets (DESIGN.md)", ""]
    lines += _budgets(windows)

    lines += [
        "",
        "### Instantaneous vs averaged power field",
        "",
        f"Both fields polled every {TRACE_S * 1e3:g} ms during {result['plan']['trace_s']:g} s "
        "of the bursty load, against the counter's power over the update interval containing "
        "each sample. The lag is the shift that best aligns the field with the counter.",
        "",
    ]
    rows = []
    for name, label in (
        ("instant", "`NVML_FI_DEV_POWER_INSTANT`"),
        ("average", "`nvmlDeviceGetPowerUsage`"),
    ):
        f = result["fields"].get(name)
        if not f:
            rows.append([label, "not available", "–", "–", "–", "–", "–"])
            continue
        rows.append(
            [
                label,
                str(f["samples"]),
                _f(f["mean_w"], 1),
                _f(f["counter_mean_w"], 1),
                _f(f["mad_w"], 1),
                _f(f["best_lag_s"] * 1e3 if f["best_lag_s"] is not None else None, 0),
                _f(f["mad_at_best_lag_w"], 1),
            ]
        )
    lines += _table(
        [
            "field",
            "samples",
            "mean W",
            "counter mean W",
            "mean abs diff W",
            "best lag ms",
            "mean abs diff at that lag W",
        ],
        rows,
    )

    t = result["training"]
    lines += [
        "",
        "### Training slowdown",
        "",
        f"The transformer step, {t['steps']} steps per mode and round, {t['rounds']} rounds, "
        'modes interleaved; the ratio is to "no metering" in the same round.',
        "",
    ]
    rows = []
    for mode in t["modes"]:
        step = _s(mode["step_ms"])
        ratio = _s(mode["ratio"])
        ref_j = _s(mode["ref_j_per_step"])
        meter_j = _s(mode["meter_j_per_step"])
        rows.append(
            [
                mode["mode"],
                _f(step and step["median"], 2),
                "–"
                if ratio is None
                else f"{ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f})",
                _f(ref_j and ref_j["median"], 2),
                _f(meter_j and meter_j["median"], 2),
            ]
        )
    lines += _table(
        ["mode", "ms per step", "÷ no metering", "J per step (reference)", "J per step (meter)"],
        rows,
    )
    lines += ["", END if not dry else "<!-- end of dry run -->"]
    return "\n".join(lines)


def _resolution(r: dict[str, float] | float | None) -> str:
    if not isinstance(r, dict):
        return "timed them to ± " + _f((r or 0.0) * 1e3, 2) + " ms"
    return (
        f"timed each to ± {r['median'] * 1e3:.2f} ms (median; p99 {r['p99'] * 1e3:.2f} ms, "
        f"max {r['max'] * 1e3:.1f} ms)"
    )


def _budgets(windows: list[dict[str, Any]]) -> list[str]:
    def worst(tool: str, loads: Sequence[str]) -> float | None:
        errs = [
            abs(r["err_pct"])
            for r in windows
            if r["tool"] == tool and r["load"] in loads and r["window_s"] >= 1 and "err_pct" in r
        ]
        return max(errs) if errs else None

    rows = []
    checks = [
        (f"meter on the counter, windows >= 1 s, {load} load", worst("meter", (load,)), 1.0)
        for load in LOADS
    ]
    checks.append(
        (
            "meter sampled at 10 Hz (instantaneous field), windows >= 1 s, steady load",
            worst("sampled-100ms", ("steady",)),
            5.0,
        )
    )
    for label, value, budget in checks:
        verdict = "–" if value is None else "**PASS**" if value <= budget else "**FAIL**"
        rows.append([label, _f(value, 2), f"{budget:g}%", verdict])
    return _table(["budget", "worst abs error %", "budget", "result"], rows)


def write_section(path: Path, section: str) -> None:
    """Replace the gpu section of ``path``; else the "## Real GPU" section; else append."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    elif "\n## Real GPU\n" in text:
        head, rest = text.split("\n## Real GPU\n", 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else "\n"
        text = head + "\n" + section + "\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gpu", type=int, default=0, help="CUDA ordinal of the GPU (default 0)")
    parser.add_argument("--quick", action="store_true", help="shorter run (about 2 minutes)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="simulated GPU and loads (no torch/CUDA/NVML): checks the code path only",
    )
    parser.add_argument("--json", default="gpu_validate.json", help="raw results (JSON)")
    parser.add_argument("--markdown", default="gpu_validate.md", help="the report section")
    parser.add_argument(
        "--into", help="also replace the GPU section of this file (e.g. BENCHMARKS.md)"
    )
    parser.add_argument("--render", metavar="JSON", help="only render a saved result")
    args = parser.parse_args(argv)
    if args.dry_run and args.into:
        parser.error("--into refuses a dry run: simulated figures never go into BENCHMARKS.md")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        result = json.loads(Path(args.render).read_text())
    else:
        result = run(args)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    text = render(result)
    Path(args.markdown).write_text(text + "\n")
    print(f"wrote {args.markdown}", file=sys.stderr)
    if args.into:
        if result.get("dry_run"):
            print("not writing a dry run into", args.into, file=sys.stderr)
            return 2
        write_section(Path(args.into), text)
        print(f"replaced the GPU section of {args.into}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

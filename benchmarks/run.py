"""Run meter's benchmarks against the budgets in DESIGN.md and write BENCHMARKS.md.

    python benchmarks/run.py                  # full run (about 3 minutes), writes BENCHMARKS.md
    python benchmarks/run.py --quick          # short run (about 1 minute), same report
    python benchmarks/run.py --output out.md --json raw.json --only import,latency
    python benchmarks/run.py --compare        # then meter, CodeCarbon and Zeus side by side

Each benchmark module (``bench_*.py``, a ``run(quick) -> dict`` function) runs in a fresh
interpreter, so that threads and memory of one cannot disturb another; its JSON comes back
through a temporary file. ``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER`` and ``METER_*`` are
removed from their environment: every figure is on simulated GPUs and must not depend on them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS = ("import", "latency", "sampler", "memory", "accuracy", "middleware", "metrics")
CHILD_TIMEOUT_S = 300


# -- running ------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("METER_") and k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def _busy_s() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy, and stolen by the hypervisor."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0), getattr(t, "steal", 0.0)


def _children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Run ``bench_<name>`` in a fresh interpreter; its result, or ``{"error": ...}``.

    Also records how busy the rest of the machine was meanwhile (CPU used by processes other
    than the benchmark, as a share of all cores), since that is what makes figures noisy.
    """
    busy0, steal0 = _busy_s()
    own0 = _children_s()
    result = _run_child(name, quick)
    busy1, steal1 = _busy_s()
    wall_s = result.get("wall_s") or 1.0
    cores = os.cpu_count() or 1
    others_s = (busy1 - busy0) - (_children_s() - own0) - (steal1 - steal0)
    result["others_pct"] = max(others_s, 0.0) / (wall_s * cores) * 100
    result["steal_pct"] = (steal1 - steal0) / (wall_s * cores) * 100
    return result


def _run_child(name: str, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
        command += ["--result", str(result_path)] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                command,
                env=_child_env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {CHILD_TIMEOUT_S} s", "wall_s": CHILD_TIMEOUT_S}
        wall_s = time.perf_counter() - t0
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            return {"error": f"exit status {proc.returncode}", "stderr": tail, "wall_s": wall_s}
        result: dict[str, Any] = json.loads(result_path.read_text())
    result["wall_s"] = wall_s
    return result


def child(name: str, result_path: str, quick: bool) -> None:
    module = importlib.import_module(f"bench_{name}")
    result = module.run(quick)
    Path(result_path).write_text(json.dumps(result))


# -- the machine --------------------------------------------------------------------------------


def _cpu_model() -> tuple[str, bool]:
    model, virtual = platform.processor() or platform.machine(), False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags":
                    virtual = "hypervisor" in value.split()
    except OSError:
        pass
    return model, virtual


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    import psutil

    model, virtual = _cpu_model()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "meter"))
    return {
        "cpu": model,
        "virtual": virtual,
        "cores": os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{_os_name()}, kernel {platform.release()} ({platform.machine()})",
        "load": os.getloadavg(),
        "packages": {
            "meter (ai-energy-meter)": _version("ai-energy-meter"),
            "nvidia-ml-py": _version("nvidia-ml-py"),
            "psutil": _version("psutil"),
        },
        "commit": (commit + " with uncommitted changes in meter/" if dirty else commit) or "?",
    }


# -- rendering ----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _spread(s: dict[str, Any], digits: int = 1, unit: str = "") -> str:
    """``median (p10–p90, n=N)``."""
    return (
        f"{_f(s['median'], digits)}{unit} "
        f"(p10–p90 {_f(s['p10'], digits)}–{_f(s['p90'], digits)}, n={s['n']})"
    )


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else "**PASS**" if ok else "**FAIL**"


def _doc(name: str) -> str:
    """The method, from the benchmark module's docstring (its first line is the budget)."""
    module = importlib.import_module(f"bench_{name}")
    return (module.__doc__ or "").strip()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _error(result: dict[str, Any]) -> list[str]:
    lines = [f"**Did not run:** {result['error']}", ""]
    if result.get("stderr"):
        lines += ["```", *result["stderr"], "```", ""]
    return lines


def _summary(results: dict[str, dict[str, Any]]) -> list[str]:
    rows: list[list[str]] = []
    r = results.get("import")
    if r and "error" not in r:
        rows.append(
            [
                "`import meter`",
                "fresh interpreter minus `python -c pass`, bytecode cached",
                _spread(r["diff_ms"], 1, " ms"),
                f"< {r['budget_ms']:g} ms",
                _verdict(r["pass"]),
            ]
        )
    r = results.get("latency")
    if r and "error" not in r:
        for c in r["configs"]:
            reads = "boundary reads" if c["read_devices"] else "`read_devices=False`"
            rows.append(
                [
                    "`measure()` enter+exit",
                    f"{c['gpus']} simulated GPU{'s' if c['gpus'] > 1 else ''}, {reads}",
                    _spread(c["us"], 1, " µs"),
                    f"<= {r['budget_us']:g} µs",
                    _verdict(c["pass"]),
                ]
            )
        a = r.get("first_async")
        if a:
            rows.append(
                [
                    "First `async with measure()`",
                    "fresh meter, 8 simulated GPUs; largest gap of a 1 ms ticker on the loop",
                    f"{a['worst_gap_ms']:.1f} ms worst of {a['max_gap_ms']['n']} (opening "
                    f"took {a['open_ms']['median']:.0f} ms; started on the loop: "
                    f"{a['blocking_max_gap_ms']['median']:.0f} ms gap)",
                    f"< {a['budget_ms']:g} ms",
                    _verdict(a["pass"]),
                ]
            )
    r = results.get("sampler")
    if r and "error" not in r:
        for c in r["configs"]:
            rows.append(
                [
                    "Sampler thread CPU",
                    f"{c['gpus']} simulated GPUs, {c['hz']} Hz, no window open",
                    f"{c['cpu_pct_clock']:.2f}% of one core",
                    f"< {r['budget_pct']:g}% at 10 Hz" if c["pass"] is not None else "no budget",
                    _verdict(c["pass"]),
                ]
            )
    r = results.get("memory")
    if r and "error" not in r:
        main = r["main"]
        growth = main.get("rss_growth_mb")
        rows.append(
            [
                "Memory bounded",
                f"8 simulated GPUs at 1 kHz, {main['ticks']:,} samples, "
                f"{main['windows']:,} windows",
                "history never filled"
                if growth is None
                else f"RSS {growth:+.2f} MB after the history filled",
                f"< {r['budget_mb']:g} MB growth",
                _verdict(r["pass"] if growth is not None else None),
            ]
        )
    r = results.get("middleware")
    if r and "error" not in r:
        for c in r["configs"]:
            if c["pass"] is not None:
                gpus = f"{c['gpus']} simulated GPU{'s' if c['gpus'] > 1 else ''}"
                rows.append(
                    [
                        "Middleware per request",
                        f"{gpus}, bare ASGI app, in-process",
                        _spread(c["added_us"], 1, " µs"),
                        f"< {r['budget_us']:g} µs",
                        _verdict(c["pass"]),
                    ]
                )
    for name, r in results.items():
        if "error" in r:
            rows.append([f"`bench_{name}`", "did not run", r["error"], "", "**ERROR**"])
    rows.append(["`measure()` enter+exit", "8 real GPUs", "not measured (no GPU)", "< 1 ms", "–"])
    if "middleware" not in results:
        rows.append(["Middleware per request", "not measured in this run", "–", "< 50 µs", "–"])
    r = results.get("metrics")
    if r and "error" not in r:
        rows.append(
            [
                "`/metrics` render",
                f"{r['gpus']} simulated GPUs, {r['windows']} windows, {r['series']} series",
                _spread(r["render_ms"], 2, " ms"),
                f"< {r['budget_ms']:g} ms",
                _verdict(r["pass"]),
            ]
        )
        for load in r.get("loads", ()):
            rows.append(
                [
                    "`/metrics` under load",
                    f"{load['scrapers']} scrapers {load['label']} for {load['seconds']:g} s, "
                    f"`start_http_server`, {r['gpus']} simulated GPUs, {r['windows']} windows",
                    _load_figures(load),
                    f"0 errors, p99 < {load['p99_budget_ms']:g} ms",
                    _verdict(load["pass"]),
                ]
            )
    elif "metrics" not in results:
        rows.append(["`/metrics` render", "not measured in this run", "–", "< 5 ms", "–"])
    rows.append(["Accuracy on a real GPU", "not measured (no GPU)", "–", "1% / 5%", "–"])
    return _table(["Budget", "Configuration", "Measured (median)", "Budget", "Result"], rows)


def _import_section(r: dict[str, Any]) -> list[str]:
    cold = r["uncached"]
    rows = [
        ['`python -c "import meter"` (wall)', r["import_meter_ms"]],
        ['`python -c "pass"` (wall)', r["baseline_ms"]],
        ["**difference**, paired run by run", r["diff_ms"]],
        ["inside the process (`perf_counter` around the import)", r["in_process_ms"]],
        ['meter compiled from source: `python -c "import meter"`', cold["import_meter_ms"]],
        ['meter compiled from source: `python -c "pass"`', cold["baseline_ms"]],
        ["meter compiled from source: difference", cold["diff_ms"]],
    ]
    lines = _table(
        ["ms", "median", "p10", "p90", "min", "max", "n"],
        [
            [label, *(_f(s[k]) for k in ("median", "p10", "p90", "min", "max")), str(s["n"])]
            for label, s in rows
        ],
    )
    lines += [
        "",
        f"`import meter` loads {r['new_modules']} modules the bare interpreter had not. "
        f'Top 5 by self time in `python -X importtime -c "import meter"` (median of '
        f"{r['importtime_runs']} runs; the whole `meter` import: "
        f"{r['importtime_total_ms']:.1f} ms cumulative under `-X importtime`, which "
        f"inflates it):",
        "",
    ]
    lines += _table(
        ["module", "self ms", "cumulative ms"],
        [
            [f"`{t['module']}`", _f(t["self_ms"], 2), _f(t["cumulative_ms"], 2)]
            for t in r["importtime_top"]
        ],
    )
    return lines


def _latency_section(r: dict[str, Any]) -> list[str]:
    rows = []
    for c in r["configs"]:
        s = c["us"]
        rows.append(
            [
                str(c["gpus"]),
                "yes" if c["read_devices"] else "no",
                f"{c['nvml_reads_per_window']:.2f}",
                *(_f(s[k]) for k in ("median", "p10", "p90", "min", "max")),
                str(s["n"]),
                _verdict(c["pass"]),
            ]
        )
    lines = _table(
        [
            "GPUs",
            "boundary reads",
            "NVML counter calls per window (mean)",
            "median µs",
            "p10",
            "p90",
            "min",
            "max",
            f"batches of {r['batch']}",
            f"<= {r['budget_us']:g} µs",
        ],
        rows,
    )
    fake = r["fake_nvml_energy_call_us"]
    read = r["device_read_us"]
    lines += [
        "",
        f"One fake `nvmlDeviceGetTotalEnergyConsumption` call alone: {_spread(fake, 2, ' µs')}; "
        f"one `NvmlGpu.read()` through meter's device code on top of it: "
        f"{_spread(read, 2, ' µs')} (batches of {10 * r['batch']:,} calls).",
    ]
    bullets: list[str] = []
    by = {(c["gpus"], c["read_devices"]): c["us"]["median"] for c in r["configs"]}
    for read, label in ((True, "with boundary reads"), (False, "with `read_devices=False`")):
        if (1, read) in by and (8, read) in by:
            bullets += [
                f"- Each GPU beyond the first adds {(by[8, read] - by[1, read]) / 7:.1f} µs "
                f"{label} (8-GPU minus 1-GPU median, over 7).",
            ]
    for c in r["configs"]:
        if c["read_devices"] and c["nvml_reads_per_window"]:
            calls = c["nvml_reads_per_window"]
            fake_part = calls * fake["median"]
            rest = c["us"]["median"] - fake_part
            bullets += [
                f"- {c['gpus']} GPU{'s' if c['gpus'] > 1 else ''} with boundary reads: "
                f"{calls:.2f} fake NVML calls × {fake['median']:.2f} µs = {fake_part:.1f} µs "
                f"of the "
                f"{c['us']['median']:.1f} µs are the fake NVML itself; the remaining "
                f"{rest:.1f} µs are meter's own code "
                f"({'within' if rest < r['budget_us'] else 'over'} the {r['budget_us']:g} µs "
                f"budget even with a free NVML).",
            ]
    between = r.get("between_steps") or []
    if between:
        bullets += [
            "",
            "**Between training steps** (each boundary timed alone around a ~10 ms numpy "
            "matrix product; 1 simulated GPU; caches hold the step's data, not meter's code):",
            "",
            *_table(
                ["boundary reads", "enter µs (median, p10–p90)", "exit µs (median, p10–p90)"],
                [
                    [
                        "yes" if b["read_devices"] else "no",
                        _spread(b["enter_us"], 1),
                        _spread(b["exit_us"], 1),
                    ]
                    for b in between
                ],
            ),
            "",
            "A window's exit only notes its end (the time, the published snapshots, and a "
            "read where a device needs one); its joules and CO2e are worked out by the "
            "sampler's thread after its next tick, or by the first reader of the result.",
        ]
    a = r.get("first_async")
    if a:
        bullets += [
            "",
            f"**First async window**: a fresh meter on 8 simulated GPUs, opened by `async with "
            f"m.measure()` while a task ticks every 1 ms: the largest gap between ticks was "
            f"{_spread(a['max_gap_ms'], 2, ' ms')} (worst {a['worst_gap_ms']:.2f} ms, budget "
            f"< {a['budget_ms']:g} ms: {_verdict(a['pass'])}); opening took "
            f"{_spread(a['open_ms'], 0, ' ms')}, in an executor. With `m.start()` called on "
            f"the loop instead, the largest gap was {_spread(a['blocking_max_gap_ms'], 0, ' ms')}.",
        ]
    return [*lines, "", *bullets]


def _sampler_section(r: dict[str, Any]) -> list[str]:
    def row(c: dict[str, Any]) -> list[str]:
        per_s = c["cpu_pct_per_second"]
        never = sum(1 for n in c["captures_per_counter"] if n == 0) if c["phase_lock"] else None
        return [
            f"{c['hz']} Hz" + ("" if c["phase_lock"] else ", `phase_lock=False`"),
            _f(c["measured_s"]),
            f"{c['cpu_pct_proc']:.2f}",
            f"{c['cpu_pct_clock']:.2f}",
            f"{per_s['p10']:.2f}–{per_s['p90']:.2f} (max {per_s['max']:.2f})",
            _f(c["ticks_per_s"]),
            _f(c["cpu_us_per_tick"], 0),
            str(c["captures"]) + ("" if never is None else f" ({never} never)"),
            str(c["unlocks"]) if c["phase_lock"] else "–",
            f"{c['startup_wall_s'] * 1e3:.0f}",
            f"{c['startup_cpu_ms_clock']:.0f}",
            _verdict(c["pass"]),
        ]

    lines = _table(
        [
            "rate",
            "measured s",
            "CPU % (/proc stat)",
            "CPU % (thread clock)",
            "per-second CPU % p10–p90",
            "ticks/s",
            "CPU µs per tick",
            "step captures (counters never captured)",
            "lock losses",
            "start-up wall ms",
            "start-up CPU ms",
            f"< {r['budget_pct']:g}%",
        ],
        [row(c) for c in r["configs"] + r["no_phase_lock"]],
    )
    lines += [
        "",
        "The `/proc` figure counts whole clock ticks (10 ms), the thread-clock figure "
        "nanoseconds; the budget is judged on the latter. Start-up: wall time of "
        "`Meter.start()` (it waits for the calibration) and the sampler thread's CPU by then, "
        f"left out of the steady figures (which start {r['skip_s']:g} s after start). "
        "`phase_lock=False` rows: ticks only, no calibration and no step captures, so the "
        "difference to the rows above is the cost of keeping 8 counters phase-locked. A lock "
        "loss makes the sampler recalibrate that counter, polling it for up to 0.5 s, during "
        "which no tick happens (fewer ticks/s, a CPU spike in that second). "
        "A thread doing nothing but `Event.wait(interval)` uses "
        + " and ".join(
            f"{b['cpu_pct']:.2f}% at {b['hz']} Hz ({b['cpu_us_per_wake']:.0f} µs per wake-up)"
            for b in r["bare_wait"]
        )
        + " on this machine: the floor for any thread waking at that rate.",
    ]
    return lines


def _memory_section(r: dict[str, Any]) -> list[str]:
    main, small = r["main"], r["small_history"]

    def mb(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    lines = _table(
        [
            "run",
            "history",
            "samples recorded",
            "ticks/s",
            "windows",
            "rings full at",
            "RSS start MB",
            "RSS at baseline MB (t)",
            "RSS end MB",
            "growth MB",
        ],
        [
            [
                label,
                f"{d['history']:,} (coarse {d['coarse_cap']:,})",
                f"{d['ticks']:,}",
                _f(d["ticks_per_s"], 0),
                f"{d['windows']:,}",
                f"fine {d['fine_full_s'] or '–'} s, coarse {d['coarse_full_s'] or 'not full'}"
                + (" s" if d["coarse_full_s"] else ""),
                mb(d["rss_start_mb"]),
                mb(d.get("rss_base_mb"))
                + (f" ({d['base_s']:.0f} s)" if d.get("base_s") is not None else ""),
                mb(d.get("rss_end_mb")),
                "–" if d.get("rss_growth_mb") is None else f"{d['rss_growth_mb']:+.2f}",
            ]
            for label, d in (("main", main), ("small history + tracemalloc", small))
        ],
    )
    lines += [
        "",
        f"Result: {_verdict(r['pass'])} (budget: < {r['budget_mb']:g} MB growth from the "
        "baseline, one second after the fine history filled, to the end; the main run "
        f"lasted {main['duration_s']:.0f} s).",
    ]
    if main.get("sample_bytes"):
        per = main["sample_bytes"]
        coarse = main.get("coarse_entry_bytes") or 0
        full = (main["history"] * per + main["coarse_cap"] * coarse) / 2**20
        lines += [
            "",
            f"One sample of 8 GPUs holds about {per:,} bytes and one coarse entry about "
            f"{coarse:,} bytes (deep `sys.getsizeof`), so both rings full hold about "
            f"{full:.1f} MB with the default history of {main['history']:,}. The coarse ring "
            f"fills only after {100 * main['coarse_cap']:,} samples (about "
            f"{100 * main['coarse_cap'] * 0.1 / 3600:.0f} h at 10 Hz), which is why the "
            "second run uses a history of "
            f"{small['history']} (coarse full after {100 * small['coarse_cap']:,} samples).",
        ]
    if "traced_growth_kb" in small:
        files = ", ".join(
            f"`{Path(f['file']).name}` {f['kb']:+.1f} KB" for f in small["traced_growth_by_file"]
        )
        lines += [
            "",
            "tracemalloc in the second run (started once both rings were full; baseline once "
            f"they had turned over completely under it, at {small['base_s']:.0f} s): "
            f"{small['traced_base_kb']:.1f} KB of traced allocations alive at the baseline, "
            f"{small['traced_end_kb']:.1f} KB at the end ({small['traced_growth_kb']:+.1f} KB, "
            f"of which {small['traced_growth_meter_kb']:+.1f} KB allocated in `meter/`; "
            f"largest changes by file: {files}); between {small['traced_min_kb']:.1f} and "
            f"{small['traced_max_kb']:.1f} KB every second in between (objects waiting for the "
            "garbage collector come and go: only a trend would mean a leak). tracemalloc slows "
            "every allocation, hence the lower tick rate of that run.",
        ]
    rows = main["rows"]
    keep = {0, len(rows) - 1} | {i for i, row in enumerate(rows) if round(row["t_s"]) % 5 == 0}
    keep |= {
        i for i, row in enumerate(rows) if row["t_s"] in (main["fine_full_s"], main.get("base_s"))
    }
    lines += ["", "Main run, every 5 s, and when the history filled (+1 s: the baseline):", ""]
    lines += _table(
        ["t s", "RSS MB", "len(samples)", "len(coarse)", "ticks", "windows"],
        [
            [
                _f(row["t_s"], 0),
                f"{row['rss_mb']:.2f}",
                f"{row['samples']:,}",
                f"{row['coarse']:,}",
                f"{row['ticks']:,}",
                f"{row['windows']:,}",
            ]
            for i, row in enumerate(rows)
            if i in keep
        ],
    )
    if main.get("sampler_error") or small.get("sampler_error"):
        lines += ["", f"Sampler error: {main.get('sampler_error') or small.get('sampler_error')}"]
    return lines


def _accuracy_section(r: dict[str, Any]) -> list[str]:
    def window(seconds: float) -> str:
        text = f"{seconds:g} s" if seconds >= 0.5 else f"{seconds * 1e3:g} ms"
        return text + (" (approx.)" if seconds < 0.1 else "")

    lines = _table(
        [
            "device",
            "window",
            "n",
            "vs published: median abs error %",
            "max abs error %",
            "median signed error %",
            "bracket ± %",
            "vs true energy: median abs error %",
            "flagged `approximate`",
        ],
        [
            [
                row["device"],
                window(row["window_s"]),
                str(row["windows"]),
                f"{row['median_abs_err_pct']:.3f}",
                f"{row['max_abs_err_pct']:.3f}",
                f"{row['median_err_pct']:+.3f}",
                f"{row['bracket_pct']:.3f}",
                _f(row.get("median_abs_err_true_pct"), 3),
                f"{row['approximate']}/{row['windows']}",
            ]
            for row in r["rows"]
        ],
    )
    lines += [
        "",
        "Windows under 100 ms are shorter than the counter's update period, and for the "
        "10 Hz sampler than the sampling interval: those figures are approximate by "
        "construction. An error smaller than the bracket is below what this method can "
        "resolve. *vs published* is meter's own error; *vs true energy* adds what the modelled "
        "sensor does not see (its 25 ms-in-100 ms window and its 100 ms publication lag); on "
        'real recordings see "Against an external power meter" below.',
    ]
    unflagged = [
        row
        for row in r["rows"]
        if "(counter)" not in row["method"]
        and row["window_s"] < row.get("interval_s", 0)
        and row["approximate"] < row["windows"]
    ]
    if unflagged:
        worst = max(unflagged, key=lambda row: row["max_abs_err_pct"])
        lines += [
            "",
            "Windows shorter than the sampling interval of a device without an energy counter "
            "are not flagged `approximate` by meter (the flag is set for counter devices "
            f"only): e.g. {worst['window_s'] * 1e3:g} ms windows at "
            f"{1 / worst['interval_s']:g} Hz, up to {worst['max_abs_err_pct']:.1f}% off.",
        ]
    return lines


def _load_figures(load: dict[str, Any]) -> str:
    """``N errors of M scrapes; p50 X ms, p99 Y ms``."""
    return (
        f"{load['error_count']} errors of {load['scrapes']:,} scrapes; p50 "
        f"{_f(load['p50_ms'], 0)} ms, p99 {_f(load['p99_ms'], 0)} ms"
    )


def _metrics_section(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['series']} series, {r['bytes']:,} bytes of exposition.",
        "",
    ]
    lines += _table(
        ["what", "median ms", "p10", "p90", "min", "max", "n", f"< {r['budget_ms']:g} ms"],
        [
            [
                label,
                *(_f(s[k], 2) for k in ("median", "p10", "p90", "min", "max")),
                str(s["n"]),
                verdict,
            ]
            for label, s, verdict in (
                ("`generate_latest` of meter's registry", r["render_ms"], _verdict(r["pass"])),
                ("GET over HTTP from `start_http_server`", r["http_ms"], "no budget"),
            )
        ],
    )
    loads = r.get("loads")
    if loads:
        first = loads[0]
        lines += [
            "",
            f"Under load: {first['scrapers']} scrapers for {first['seconds']:g} s each way, a "
            f"new connection per scrape, a {first['timeout_s']:g} s timeout; the server's listen "
            f"backlog is {r['listen_backlog']}, and scrapes share one render while the meter's "
            f"figures are unchanged (for at most {r['reuse_s']:g} s): {r['renders']:,} renders "
            "served the loads below.",
            "",
        ]
        rows = []
        for load in loads:
            errors = ", ".join(f"{kind} {n:,}" for kind, n in sorted(load["errors"].items()))
            rows.append(
                [
                    load["label"],
                    f"{load['scrapes']:,}",
                    _f(load["per_s"], 0),
                    f"{load['error_count']:,}" + (f" ({errors})" if errors else ""),
                    *(_f(load[k], 0) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
                    _verdict(load["pass"]),
                ]
            )
        lines += _table(
            [
                "scrapers",
                "scrapes",
                "per second",
                "errors",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                f"0 errors, p99 < {first['p99_budget_ms']:g} ms",
            ],
            rows,
        )
    return lines


def _middleware_section(r: dict[str, Any]) -> list[str]:
    configs = r["configs"]
    lines = _table(
        ["GPUs", "app", "without µs", "with µs", "added per request", "budget"],
        [
            [
                str(c["gpus"]),
                c["label"],
                _f(c["without_us"]["median"]),
                _f(c["with_us"]["median"]),
                _spread(c["added_us"], 1, " µs"),
                _verdict(c["pass"]) if c["pass"] is not None else "no budget",
            ]
            for c in configs
        ],
    )
    lines += [
        "",
        f"Medians of {r['batches']} paired batches of {r['batch']:,} requests each; the "
        "budget is judged on the bare app, where the added time is the middleware's alone. "
        "Most of it is the request's shared window (`read_devices=False`), whose cost grows "
        "with the number of devices as in section 2.",
    ]
    sse = next((c for c in configs if c.get("per_message_added_us") is not None), None)
    if sse is not None:
        lines += [
            "",
            f"The SSE response sends {sse['messages']} messages (the start, token chunks, a "
            f"`usage` chunk and `[DONE]`): about {sse['per_message_added_us']:.1f} µs each, "
            "watching and scanning every chunk for `usage` as it passes; nothing is buffered.",
        ]
    threads = r["nvml_calls_by_thread"]
    calls = ", ".join(f"`{name}` {n:,}" for name, n in sorted(threads.items())) or "none"
    off_path = set(threads) <= {"meter-sampler"}
    lines += [
        "",
        f"NVML calls while the requests ran, by thread: {calls}"
        + (" — none from the thread serving the requests." if off_path else "."),
    ]
    t = r.get("throughput")
    if t:
        lines += [
            "",
            f"Throughput under uvicorn, {t['pairs']} alternating runs of {t['seconds']:g} s "
            f"per server, {t['connections']} keep-alive connections:",
            "",
        ]
        lines += _table(
            ["server", "requests/s", "server CPU per request"],
            [
                [
                    "without the middleware (no meter)",
                    _spread(t["without_rps"], 0),
                    _spread(t["without_cpu_us"], 0, " µs"),
                ],
                [
                    "with `EnergyMiddleware` (defaults)",
                    _spread(t["with_rps"], 0),
                    _spread(t["with_cpu_us"], 0, " µs"),
                ],
            ],
        )
        lines += [
            "",
            f"With the middleware: {t['change_pct']:+.0f}% requests per second and "
            f"{t['added_cpu_us']:+.0f} µs of server CPU per request (the meter's sampler "
            "thread included). That is more than in-process: the client "
            "shares this small machine, which slows every step of the server alike. The "
            "endpoint does no work, so this is the worst case: on a 100 ms inference request "
            f"the same cost would be {t['added_cpu_us'] / 1e3:.2f}% of its time.",
        ]
    return lines


_REAL_GPU = """## Real GPU

**No GPU has been lent to this project yet, so there are no real-GPU figures here.** The
script that produces them is ready: `benchmarks/compare/gpu_validate.py` measures meter's
windows (10 ms to 60 s; steady, bursty and transformer-training loads) against the NVML energy
counter polled every millisecond, the sampled method at several intervals, the instantaneous
against the averaged power field, CodeCarbon and Zeus on the same windows, the training
slowdown with CUDA sync on and off, and the board's idle power; run with `--into
BENCHMARKS.md` on a GPU machine, it replaces this section (see `benchmarks/compare/README.md`).
The budgets that need a GPU: `measure()` < 1 ms with 8 real GPUs; windows >= 1 s within 1% of
the NVML energy counter; the sampled fallback within 5% at 10 Hz on steady load.

## Known gaps

- **No real GPU has been lent**: every figure above is on simulated GPUs; the budget for
  `measure()` on 8 real GPUs (1 ms) and the real-GPU accuracy budgets are not measured.
- **A window on a device that is read at its boundaries** (RAPL, a GPU read through its power
  field, a counter not yet phase-locked) still reads it at exit on the caller's thread; right
  after a training step that read is cold (section 2, "between training steps": exit 12 µs
  median, p90 46 µs, with 1 simulated GPU). Windows on phase-locked counters and on estimated
  devices only note the time and the published readings.
- **After a drop to 0 W** the Prometheus counter can lead the board's energy by up to 1.5
  counter update periods of the old power (it extrapolates between updates and never steps
  back); a board that still draws power absorbs it within a second or so, and windows are
  corrected at exit. Tested in `tests/exporters/test_prometheus.py`.
- **The every-step training-loop figure** (side-by-side section) is close to this VM's noise:
  identical blocks measured against each other differ by about ±0.3 %."""

_SECTIONS = {
    "import": ("1. `import meter`", _import_section),
    "latency": ("2. `measure()` enter+exit latency", _latency_section),
    "sampler": ("3. Sampler thread CPU", _sampler_section),
    "memory": ("4. Memory over a long run", _memory_section),
    "accuracy": ("5. Accuracy on the simulator (no budget)", _accuracy_section),
    "middleware": ("6. ASGI middleware per request", _middleware_section),
    "metrics": ("7. `/metrics` render", _metrics_section),
}


def render(results: dict[str, dict[str, Any]], info: dict[str, Any], quick: bool) -> str:
    total_s = sum(r.get("wall_s", 0.0) for r in results.values())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if quick else ''}` on {when} "
        f"({'quick' if quick else 'full'} run, {total_s:.0f} s). Budgets from DESIGN.md "
        '("Budgets"). Every figure is from the machine below, on simulated GPUs (a fake NVML '
        "in Python, `meter.testing`); medians over repeats, with p10–p90 or min/max and the "
        "number of repeats. The machine is small and shared, so expect a few percent to tens "
        "of percent between runs; see `benchmarks/README.md` to reproduce.",
        "",
        "## Machine",
        "",
    ]
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    lines += _table(
        ["", ""],
        [
            ["CPU", info["cpu"] + (" (virtual machine)" if info["virtual"] else "")],
            ["Cores", str(info["cores"])],
            ["Memory", f"{info['memory_gib']:.1f} GiB"],
            ["Python", info["python"]],
            ["OS", info["os"]],
            ["Packages", packages],
            ["meter commit", info["commit"]],
            ["Load average at start", ", ".join(f"{x:.2f}" for x in info["load"])],
            ["GPU", "none (simulated GPUs only)"],
        ],
    )
    lines += ["", "## Summary", "", *_summary(results), ""]
    for name, (title, section) in _SECTIONS.items():
        r = results.get(name)
        if r is None:
            continue
        lines += [f"## {title}", "", _doc(name), ""]
        lines += _error(r) if "error" in r else section(r)
        lines += [
            "",
            f"_Ran in {r.get('wall_s', 0):.0f} s; meanwhile other processes used "
            f"{r.get('others_pct', 0):.0f}% of the machine's CPU"
            + (
                f" and the hypervisor stole {r['steal_pct']:.0f}%"
                if r.get("steal_pct", 0) >= 0.5
                else ""
            )
            + "._",
            "",
        ]
    lines += [_REAL_GPU, ""]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument(
        "--output", default=str(ROOT / "BENCHMARKS.md"), help="report to write (BENCHMARKS.md)"
    )
    parser.add_argument("--json", help="also write the raw results to this JSON file")
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="then run benchmarks/compare/run_compare.py (meter, CodeCarbon and Zeus side by side)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        sys.path.insert(0, str(HERE))
        child(args.child, args.result, args.quick)
        return 0

    names = BENCHMARKS
    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; pick from {BENCHMARKS}")
    sys.path.insert(0, str(HERE))
    info = machine()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"{name}...", end=" ", flush=True, file=sys.stderr)
        results[name] = run_one(name, args.quick)
        status = results[name].get("error") or f"{results[name]['wall_s']:.0f} s"
        print(status, file=sys.stderr)
    output = Path(args.output)
    text = render(results, info, args.quick)
    Path(args.output).write_text(_keep_sections(text, output))
    print(f"wrote {args.output}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1))
    status = 1 if any("error" in r for r in results.values()) else 0
    if args.compare:
        script = HERE / "compare" / "run_compare.py"
        command = [sys.executable, str(script), "--output", str(output)]
        status |= subprocess.run(command + (["--quick"] if args.quick else [])).returncode
    return status


def _keep_sections(text: str, output: Path) -> str:
    """Keep what other scripts wrote into the previous report: the recordings beside an
    external meter (``benchmarks/bench_traces.py``), the side-by-side comparison
    (``benchmarks/compare/run_compare.py``) and real-GPU figures
    (``benchmarks/compare/gpu_validate.py --into``), between their markers."""
    old = output.read_text() if output.exists() else ""

    def block(name: str) -> str | None:
        begin, end = f"<!-- {name}:begin", f"<!-- {name}:end -->"
        if begin not in old or end not in old:
            return None
        return begin + old.split(begin, 1)[1].split(end, 1)[0] + end

    compare, gpu = block("compare"), block("gpu")
    traces = block("traces")  # benchmarks/bench_traces.py --into
    if traces:
        compare = traces + ("\n\n" + compare if compare else "")
    head, sep, tail = text.partition("\n## Real GPU\n")
    if not sep:
        return text + "".join(f"\n{b}\n" for b in (compare, gpu) if b)
    if gpu:  # real figures replace the "no GPU yet" section, up to the next one
        nxt = tail.find("\n## ")
        tail = gpu + "\n" + (tail[nxt:] if nxt >= 0 else "")
        sep = "\n"
    else:
        sep = "\n## Real GPU\n"
    return head + (f"\n{compare}\n" if compare else "") + sep + tail


if __name__ == "__main__":
    sys.exit(main())

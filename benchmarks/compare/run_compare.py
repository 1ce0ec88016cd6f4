"""Side by side: meter, CodeCarbon and Zeus on the same machine, workload and runs.

    .venv/bin/python benchmarks/compare/run_compare.py            # full run, about 8 minutes
    .venv/bin/python benchmarks/compare/run_compare.py --quick    # about 2 minutes
    .venv/bin/python benchmarks/run.py --compare [--quick]        # the same, through run.py

Creates (once) one virtual environment per tool under ``.bench-venvs/`` from the
``requirements-*.txt`` files here (CodeCarbon and Zeus from PyPI; meter from this checkout,
reinstalled when ``meter/`` changes), then runs every measurement in fresh interpreters
(``workloads.py``), interleaving the tools round by round, and writes the section between the
``compare`` markers of ``BENCHMARKS.md`` (the rest of the file is left as it is; ``run.py``
keeps the section when it rewrites the file). Only the standard library is needed here.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENVS = ROOT / ".bench-venvs"
WORKLOADS = HERE / "workloads.py"
TOOLS = ("meter", "codecarbon", "zeus")
LABELS = {"meter": "meter", "codecarbon": "CodeCarbon", "zeus": "Zeus", "none": "no tool"}
BEGIN = "<!-- compare:begin (written by benchmarks/compare/run_compare.py) -->"
END = "<!-- compare:end -->"
CHILD_TIMEOUT_S = 180

#: (full, quick) settings.
PLAN: dict[str, dict[str, Any]] = {
    "full": {
        "import_rounds": 15,
        "session_rounds": 5,
        "cycles": 3,
        "idle_rounds": 3,
        "idle_s": 20.0,
        "train_rounds": 5,
        "steps": 300,
    },
    "quick": {
        "import_rounds": 5,
        "session_rounds": 2,
        "cycles": 2,
        "idle_rounds": 1,
        "idle_s": 8.0,
        "train_rounds": 2,
        "steps": 150,
    },
}

# -- environments ---------------------------------------------------------------------------------


def python_of(tool: str) -> Path:
    return VENVS / tool / "bin" / "python"


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _meter_sources() -> list[Path]:
    files = [p for p in (ROOT / "meter").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return [*files, ROOT / "pyproject.toml"]


def _pip(tool: str, *args: str) -> None:
    command = [
        str(python_of(tool)),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    print(f"  {tool}: pip install {' '.join(args)}", file=sys.stderr)
    proc = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"pip install failed in {VENVS / tool}: see above")


def ensure_envs() -> None:
    """Create each tool's environment if missing; reinstall what changed since the last run.

    The commands, for reference (what this runs):

        python -m venv .bench-venvs/<tool>
        .bench-venvs/<tool>/bin/python -m pip install -r benchmarks/compare/requirements-<tool>.txt
        .bench-venvs/meter/bin/python -m pip install .            # then --no-deps on changes
    """
    for tool in TOOLS:
        env = VENVS / tool
        requirements = HERE / f"requirements-{tool}.txt"
        if not python_of(tool).exists():
            print(f"creating {env.relative_to(ROOT)}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        stamp = env / ".requirements.sha256"
        digest = _digest([requirements])
        if not stamp.exists() or stamp.read_text() != digest:
            _pip(tool, "-r", str(requirements))
            stamp.write_text(digest)
    stamp = VENVS / "meter" / ".meter-source.sha256"
    digest = _digest(_meter_sources())
    if not stamp.exists() or stamp.read_text() != digest:
        first = not stamp.exists()
        _pip("meter", *([] if first else ["--no-deps", "--force-reinstall"]), str(ROOT))
        stamp.write_text(digest)


def _version(tool: str, dist: str) -> str:
    out = subprocess.run(
        [
            str(python_of(tool)),
            "-c",
            f"import importlib.metadata as m; print(m.version({dist!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "not installed"


# -- running children -----------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of every child: no user settings that could change the figures."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("METER_", "CODECARBON_", "ZEUS_", "CUDA_", "PYTHON"))
        and k not in ("VIRTUAL_ENV",)
    }
    env.update(
        METER_ZONE="DE",  # the zone CodeCarbon is given (country_iso_code="DEU")
        METER_IDLE_FILE="/nonexistent/meter-compare-idle.json",
        CUDA_VISIBLE_DEVICES="",  # nothing here has a GPU; make it explicit for every tool
        # One BLAS thread: on a small VM, OpenBLAS's threads slow down erratically whenever
        # anything else runs (identical tool-less runs vary by up to 40%), which would drown
        # the differences between the tools. The tools' threads then use the other cores.
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def run_child(
    venv: str, task: str, tool: str, opts: dict[str, Any], workdir: str
) -> dict[str, Any]:
    """Run one ``workloads.py`` measurement; its result, or ``{"error": ..., "stderr": [...]}``."""
    command = [str(python_of(venv)), str(WORKLOADS), task, tool, json.dumps(opts)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            cwd=workdir,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s", "tool": tool}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["process_wall_s"] = wall
            result["stderr"] = _stderr_lines(proc.stderr)
            return result
    return {
        "error": f"exit status {proc.returncode}",
        "tool": tool,
        "stderr": proc.stderr.strip().splitlines()[-12:],
    }


def _stderr_lines(text: str) -> list[str]:
    """Distinct stderr lines (what a tool logs or warns), without timestamps, at most 8."""
    seen: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if "] " in line and line.startswith("["):  # "[codecarbon INFO @ 03:13:34] ..."
            head, _, rest = line.partition("] ")
            line = head.split(" @ ")[0] + "] " + rest
        if line and line not in seen:
            seen.append(line)
    return seen[:8]


def rotate(items: Sequence[Any], r: int) -> list[Any]:
    k = r % len(items)
    return [*items[k:], *items[:k]]


def timed_wall(command: list[str], workdir: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, cwd=workdir, env=child_env(), capture_output=True, check=True)
    return time.perf_counter() - t0


# -- the benchmarks -------------------------------------------------------------------------------

IMPORTS = {
    "meter": "import meter",
    "codecarbon": "from codecarbon import OfflineEmissionsTracker",
    "zeus": "from zeus.monitor import ZeusMonitor",
}


def bench_import(plan: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Wall time of ``python -c IMPORT`` minus ``python -c pass``, paired in each tool's env."""
    for tool in TOOLS:  # warm-up: bytecode caches written, files in the page cache
        for _ in range(2):
            timed_wall([str(python_of(tool)), "-c", IMPORTS[tool]], workdir)
    rounds: list[dict[str, float]] = []
    for r in range(plan["import_rounds"]):
        row: dict[str, float] = {}
        for tool in rotate(TOOLS, r):
            py = str(python_of(tool))
            pair = [[py, "-c", "pass"], [py, "-c", IMPORTS[tool]]]
            if r % 2:
                pair.reverse()
            times = [timed_wall(c, workdir) for c in pair]
            if r % 2:
                times.reverse()
            row[tool] = (times[1] - times[0]) * 1e3
        rounds.append(row)
    return {"rounds": rounds}


def bench_session(plan: dict[str, Any], workdir: str) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    opts = {"cycles": plan["cycles"], "batches": 20, "settle_s": 2.0}
    for r in range(plan["session_rounds"]):
        rounds.append(
            {tool: run_child(tool, "session", tool, opts, workdir) for tool in rotate(TOOLS, r)}
        )
    return {"rounds": rounds}


IDLE_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # key: (venv, tool, options)
    "none": ("meter", "none", {}),
    "meter": ("meter", "meter", {}),
    "codecarbon-15s": ("codecarbon", "codecarbon", {"measure_power_secs": 15}),
    "codecarbon-1s": ("codecarbon", "codecarbon", {"measure_power_secs": 1}),
    "zeus": ("zeus", "zeus", {}),
}


def bench_idle(plan: dict[str, Any], workdir: str) -> dict[str, Any]:
    """All configurations at once (they sleep; CPU time is per process), repeated."""
    rounds: list[dict[str, Any]] = []
    for _ in range(plan["idle_rounds"]):
        procs = {}
        for key, (venv, tool, extra) in IDLE_CONFIGS.items():
            opts = {"seconds": plan["idle_s"], "warm_s": 3.0, **extra}
            command = [str(python_of(venv)), str(WORKLOADS), "idle", tool, json.dumps(opts)]
            procs[key] = subprocess.Popen(
                command,
                cwd=workdir,
                env=child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        row: dict[str, Any] = {}
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
            lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
            row[key] = (
                json.loads(lines[-1][7:])
                if lines
                else {"error": f"exit status {proc.returncode}", "stderr": err.splitlines()[-8:]}
            )
        rounds.append(row)
    return {"rounds": rounds}


#: The training loops: the same MLP in numpy and in PyTorch on the CPU.
FRAMEWORKS = ("numpy", "torch")
_TRAIN_TOOLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "none": ("meter", "none", {"mode": "none"}),
    # Empty blocks measured the same way as every tool's steps: the method's noise floor.
    "none/step": ("meter", "none", {"mode": "step"}),
    "meter/step": ("meter", "meter", {"mode": "step"}),
    "meter/run": ("meter", "meter", {"mode": "run"}),
    "codecarbon/step": ("codecarbon", "codecarbon", {"mode": "step"}),
    "codecarbon-15s/run": ("codecarbon", "codecarbon", {"mode": "run", "measure_power_secs": 15}),
    "codecarbon-1s/run": ("codecarbon", "codecarbon", {"mode": "run", "measure_power_secs": 1}),
    "zeus/step": ("zeus", "zeus", {"mode": "step"}),
    "zeus/run": ("zeus", "zeus", {"mode": "run"}),
}
#: ``"<framework>:<tool/mode>"`` -> (environment, tool, options).
TRAIN_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    f"{fw}:{key}": (venv, tool, {**extra, "framework": fw})
    for fw in FRAMEWORKS
    for key, (venv, tool, extra) in _TRAIN_TOOLS.items()
}
#: meter's budget for measuring every step of these loops (DESIGN.md, issue 11).
STEP_BUDGET_PCT = 0.5


def bench_train(plan: dict[str, Any], workdir: str) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    keys = list(TRAIN_CONFIGS)
    for r in range(plan["train_rounds"]):
        row: dict[str, Any] = {}
        for key in rotate(keys, r):
            venv, tool, extra = TRAIN_CONFIGS[key]
            row[key] = run_child(venv, "train", tool, {"steps": plan["steps"], **extra}, workdir)
        rounds.append(row)
    return {"rounds": rounds, "steps": plan["steps"]}


# -- statistics -----------------------------------------------------------------------------------


def stats(values: Sequence[float | None]) -> dict[str, Any]:
    data = sorted(float(v) for v in values if v is not None)
    if not data:
        return {"n": 0}
    return {"n": len(data), "median": statistics.median(data), "min": data[0], "max": data[-1]}


def column(rounds: list[dict[str, Any]], key: str, get: Callable[[dict[str, Any]], Any]) -> list:
    out = []
    for row in rounds:
        result = row.get(key)
        if result is None or "error" in result:
            continue
        try:
            out.append(get(result))
        except (KeyError, TypeError):
            continue
    return out


def _ok(result: Any) -> bool:
    return result is not None and not (isinstance(result, dict) and "error" in result)


def paired(
    rounds: list[dict[str, Any]],
    a: str,
    b: str,
    get: Callable[[dict[str, Any]], float],
) -> list[float]:
    """``get(a) / get(b)`` within each round where both ran."""
    out = []
    for row in rounds:
        ra, rb = row.get(a), row.get(b)
        if not _ok(ra) or not _ok(rb):
            continue
        va, vb = get(ra), get(rb)
        if va is not None and vb:
            out.append(va / vb)
    return out


# -- rendering ------------------------------------------------------------------------------------


def fmt(s: dict[str, Any], digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    if not s.get("n"):
        return "–"
    m, lo, hi = (round(s[k] * scale, digits) + 0.0 for k in ("median", "min", "max"))
    if s["n"] == 1:
        return f"{m:,.{digits}f}{unit}"
    return f"{m:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def _x(value: float) -> str:
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:,.{digits}f}"


def ratio(values: list[float], digits: int = 2) -> str:
    """``median× (min–max)`` of per-round ratios; the digits follow the size of the figure."""
    del digits
    s = stats(values)
    if not s["n"]:
        return "–"
    if s["n"] == 1:
        return f"{_x(s['median'])}×"
    return f"{_x(s['median'])}× ({_x(s['min'])}–{_x(s['max'])})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def errors(name: str, rounds: list[dict[str, Any]]) -> list[str]:
    out = []
    for i, row in enumerate(rounds):
        for key, result in row.items():
            if isinstance(result, dict) and "error" in result:
                tail = " / ".join(result.get("stderr", [])[-3:])
                out.append(f"- {name}, round {i + 1}, {key}: **{result['error']}** {tail}")
    return out


def _import_section(r: dict[str, Any]) -> list[str]:
    rounds = r["rounds"]
    rows = []
    for tool in TOOLS:
        values = [row[tool] for row in rounds if tool in row]
        vs = paired(rounds, tool, "meter", lambda v: v) if tool != "meter" else []
        rows.append(
            [
                LABELS[tool],
                f"`{IMPORTS[tool]}`",
                fmt(stats(values), 1, unit=" ms"),
                ratio(vs, 1) if vs else "–",
            ]
        )
    return table(["tool", "statement", "import ms, median (min–max)", "÷ meter, same round"], rows)


def _session_section(r: dict[str, Any]) -> list[str]:
    rounds = r["rounds"]

    def col(tool: str, get: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        return stats(column(rounds, tool, get))

    def vs(tool: str, get: Callable[[dict[str, Any]], float]) -> str:
        return "–" if tool == "meter" else ratio(paired(rounds, tool, "meter", get), 0)

    block = {
        "meter": '`with meter.measure("x"): pass`',
        "codecarbon": "`t.start_task(); t.stop_task()`",
        "zeus": '`z.begin_window("x"); z.end_window("x")`',
    }
    rows = []
    for tool in TOOLS:
        rows.append(
            [
                LABELS[tool],
                block[tool],
                fmt(col(tool, lambda x: x["block_s_median"]), 1, 1e6, " µs"),
                vs(tool, lambda x: x["block_s_median"]),
                fmt(col(tool, lambda x: x["first_block_s"]), 2, 1e3, " ms"),
            ]
        )
    lines = table(
        [
            "tool",
            "tracked block (empty)",
            "µs per block, median (min–max)",
            "÷ meter, same round",
            "first block ms",
        ],
        rows,
    )
    run_call = {
        "meter": '`get_meter().start()`; `measure("run")` enter / exit',
        "codecarbon": "`OfflineEmissionsTracker(...)`; `start()` / `stop()`",
        "zeus": "`ZeusMonitor()`; `begin_window` / `end_window`",
    }
    rows = []
    for tool in TOOLS:
        rows.append(
            [
                LABELS[tool],
                run_call[tool],
                fmt(col(tool, lambda x: x["setup_s"]), 1, 1e3, " ms"),
                fmt(col(tool, lambda x: x["start_s"]), 2, 1e3, " ms"),
                fmt(col(tool, lambda x: x["stop_s"]), 2, 1e3, " ms"),
                fmt(col(tool, lambda x: statistics.median(x["cycle_s"])), 2, 1e3, " ms"),
            ]
        )
    lines += [
        "",
        "Start and stop of a whole-run tracker (first time in the process), then a "
        "fresh tracker's complete cycle in the same process:",
        "",
    ]
    lines += table(
        ["tool", "calls", "construct ms", "start ms", "stop ms", "later full cycle ms"], rows
    )
    return lines


def _memory_section(r: dict[str, Any]) -> list[str]:
    rounds = r["rounds"]
    rows = []
    for tool in TOOLS:

        def col(get: Callable[[dict[str, Any]], Any], t: str = tool) -> dict[str, Any]:
            return stats(column(rounds, t, get))

        rows.append(
            [
                LABELS[tool],
                fmt(col(lambda x: x["rss_mb"]["python"]), 1),
                fmt(col(lambda x: x["rss_mb"]["imported"] - x["rss_mb"]["python"]), 1),
                fmt(col(lambda x: x["rss_mb"]["started"] - x["rss_mb"]["python"]), 1),
                fmt(col(lambda x: x["rss_mb"]["after_blocks"] - x["rss_mb"]["python"]), 1),
                fmt(col(lambda x: x["vm_hwm_mb"]), 1),
                fmt(col(lambda x: x["threads_started"]), 0),
            ]
        )
    return table(
        [
            "tool",
            "bare Python RSS MB",
            "+ import MB",
            "+ import + start (2 s later) MB",
            "+ after the latency loop MB",
            "peak RSS MB",
            "threads while tracking",
        ],
        rows,
    )


def _idle_section(r: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    rounds = r["rounds"]
    base = stats(column(rounds, "none", lambda x: x["cpu_pct"]))
    rows = []
    for key, (_venv, tool, extra) in IDLE_CONFIGS.items():
        label = LABELS[tool]
        if "measure_power_secs" in extra:
            label += f", `measure_power_secs={extra['measure_power_secs']}`"
        elif tool == "meter":
            label += ", default 10 Hz"
        net = [
            row[key]["cpu_pct"] - row["none"]["cpu_pct"]
            for row in rounds
            if "error" not in row.get(key, {"error": 1})
            and "error" not in row.get("none", {"error": 1})
        ]
        vs = (
            paired(rounds, key, "meter", lambda x: x["cpu_s"] - 0.0)
            if key not in ("none", "meter")
            else []
        )
        rows.append(
            [
                label,
                fmt(stats(column(rounds, key, lambda x: x["cpu_pct"])), 3, unit=" %"),
                "–" if key == "none" else fmt(stats(net), 3, unit=" %"),
                ratio(vs, 1) if vs else "–",
                fmt(stats(column(rounds, key, lambda x: x["threads"])), 0),
                fmt(stats(column(rounds, key, lambda x: x["child_processes"])), 0),
            ]
        )
    lines = table(
        [
            "tool",
            "process CPU, % of one core",
            "minus no tool",
            "÷ meter, same round",
            "threads",
            "child processes",
        ],
        rows,
    )
    if base.get("n"):
        lines += [
            "",
            f"Each figure: CPU time of the whole process over {plan['idle_s']:g} s of "
            "`time.sleep` while the tool tracks (after 3 s for its start-up), "
            f"{base['n']} round(s).",
        ]
    return lines


def _train_section(r: dict[str, Any], fw: str) -> list[str]:
    rounds = r["rounds"]
    rows = []
    none = f"{fw}:none"
    for key, (_venv, tool, extra) in TRAIN_CONFIGS.items():
        if extra["framework"] != fw:
            continue
        mode = extra["mode"]
        label = LABELS[tool]
        if "measure_power_secs" in extra:
            label += f" (`measure_power_secs={extra['measure_power_secs']}`)"
        what = {"none": "–", "step": "every step", "run": "whole loop"}[mode]
        if tool == "none" and mode == "step":
            label, what = "no tool (empty blocks)", "every step"
        slowdown = _slowdown(rounds, key, fw)
        peer = f"{fw}:meter/{mode}"
        vs = (
            paired(rounds, key, peer, lambda v: v["loop_s"])
            if tool != "meter" and mode != "none"
            else []
        )
        per_step = [
            (row[key]["loop_s"] - row[key].get("plain_s", row[none]["loop_s"]))
            / row[key]["steps"]
            * 1e3
            for row in rounds
            if "error" not in row.get(key, {"error": 1})
            and "error" not in row.get(none, {"error": 1})
        ]
        energy = stats(column(rounds, key, lambda v: v["report"]["energy_j"]))
        rows.append(
            [
                label,
                what,
                fmt(stats(column(rounds, key, lambda v: v["loop_s"])), 2, unit=" s"),
                "–" if key == none else fmt(stats(slowdown), 2, unit=" %"),
                "–" if key == none else fmt(stats(per_step), 3, unit=" ms"),
                ratio(vs, 2) if vs else "–",
                fmt(stats(column(rounds, key, lambda v: v["cpu_s"])), 2, unit=" s"),
                "–" if key == none else fmt(energy, 1, unit=" J"),
            ]
        )
    return table(
        [
            "tool",
            "measures",
            "loop wall time",
            "slowdown vs no tool",
            "added per step",
            "÷ meter (same mode), same round",
            "process CPU",
            "energy the tool reported",
        ],
        rows,
    )


def _what_measured(session: dict[str, Any]) -> list[str]:
    lines = []
    for tool in TOOLS:
        results = column(session["rounds"], tool, lambda x: x)
        if not results:
            continue
        last = results[-1]
        d = last.get("describe", {})
        report = last.get("stopped_report", {})
        if tool == "meter":
            text = (
                f"devices {', '.join(d.get('devices', [])) or 'none'}; not available: "
                + "; ".join(u.rstrip(".") for u in d.get("unavailable", []))
            )
        elif tool == "codecarbon":
            text = (
                f"hardware {', '.join(d.get('hardware', []))}, CPU mode `{d.get('cpu_mode')}` "
                f"(TDP {d.get('cpu_tdp_w')} W from its table), tracking mode "
                f"`{d.get('tracking_mode')}`; its 2 s start-stop reported CPU "
                f"{_num(report.get('cpu_power_w'))} W and RAM {_num(report.get('ram_power_w'))} W "
                "(estimates, not readings)"
            )
        else:
            text = (
                f"GPU indices {d.get('gpu_indices')}, CPU indices {d.get('cpu_indices')}: "
                f"it found nothing to measure and reported {_num(report.get('energy_j'))} J"
            )
        notes = [s for s in last.get("stderr", []) if "ESTIMATED" not in s][:3]
        lines.append(
            f"- **{LABELS[tool]}**: {text}."
            + (f" It logged: {'; '.join(f'`{n[:160]}`' for n in notes)}" if notes else "")
        )
    return lines


def _num(value: Any) -> str:
    return "?" if value is None else f"{value:.3g}"


def _per_round(
    rounds: list[dict[str, Any]], columns: dict[str, str], cell: Callable[[Any], str]
) -> list[str]:
    """One row per round: ``cell(row[key])`` under each column title, or "error"."""
    return table(
        ["round", *columns],
        [
            [
                str(i + 1),
                *("error" if "error" in row[k] else cell(row[k]) for k in columns.values()),
            ]
            for i, row in enumerate(rounds)
        ],
    )


def _raw(results: dict[str, Any]) -> list[str]:
    lines = ["<details><summary>Raw figures, every round</summary>", ""]
    imp = results["import"]["rounds"]
    lines += ["Import ms (paired difference) per round:", ""]
    lines += table(
        ["round", *(LABELS[t] for t in TOOLS)],
        [
            [str(i + 1), *(f"{row.get(t, float('nan')):.1f}" for t in TOOLS)]
            for i, row in enumerate(imp)
        ],
    )
    lines += ["", "µs per empty tracked block (median of the batches in that process):", ""]
    lines += _per_round(
        results["session"]["rounds"],
        {LABELS[t]: t for t in TOOLS},
        lambda r: f"{r['block_s_median'] * 1e6:.2f}",
    )
    lines += ["", "Idle process CPU % per round:", ""]
    lines += _per_round(
        results["idle"]["rounds"], {k: k for k in IDLE_CONFIGS}, lambda r: f"{r['cpu_pct']:.3f}"
    )
    lines += ["", "Training loop seconds per round (run order rotated each round):", ""]
    lines += _per_round(
        results["train"]["rounds"], {k: k for k in TRAIN_CONFIGS}, lambda r: f"{r['loop_s']:.3f}"
    )
    return [*lines, "", "</details>"]


def machine() -> dict[str, Any]:
    model, virtual = platform.machine(), False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                virtual = virtual or "hypervisor" in value.split()
    except OSError:
        pass
    mem = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 2**20
    except OSError:
        pass
    os_name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    rapl = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    try:
        rapl.read_text()
        rapl_state = "readable"
    except OSError as error:
        rapl_state = f"not readable ({type(error).__name__})"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "meter"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": model + (" (virtual machine)" if virtual else ""),
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "os": f"{os_name}, kernel {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rapl": rapl_state,
        "gpu": "none",
        "commit": (commit + (" with uncommitted changes in meter/" if dirty else "")) or "?",
        "load": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(
    results: dict[str, Any],
    info: dict[str, Any],
    versions: dict[str, str],
    quick: bool,
    wall_s: float,
) -> str:
    plan = PLAN["quick" if quick else "full"]
    when = info.get("date") or datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    command = "python benchmarks/compare/run_compare.py" + (" --quick" if quick else "")
    lines = [
        BEGIN,
        "## Side by side: meter, CodeCarbon, Zeus",
        "",
        f"Generated by `{command}` on {when} ({'quick' if quick else 'full'} run, "
        f"{wall_s / 60:.1f} min). The three tools ran on the same machine, in the same session, "
        "on the same workload, each in its own virtual environment (`.bench-venvs/`, created "
        "from `benchmarks/compare/requirements-*.txt`), every measurement in a fresh "
        "interpreter. The tools alternate within each round and the order rotates from round "
        "to round; every ratio is taken within one round (the machine is noisy, so a ratio of "
        "two medians from different times would not be). Figures: median (min–max) over the "
        "rounds.",
        "",
        "**No GPU and no RAPL on this machine** (a VM), so this section compares overhead: what "
        "each tool costs the program it measures. It says nothing about accuracy: here meter "
        "estimates the CPU from its TDP model (`estimated`), CodeCarbon from its own TDP table "
        "and a RAM model, and Zeus finds nothing to measure at all (so its per-call "
        "figures are its bookkeeping without any device read). Accuracy against a hardware "
        "counter needs a GPU: see [Real GPU](#real-gpu).",
        "",
        "### Machine and versions",
        "",
    ]
    lines += table(
        ["", ""],
        [
            ["CPU", f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']:.1f} GiB"],
            ["OS", info["os"]],
            ["Python", info["python"] + " (one interpreter for all three environments)"],
            ["GPU / RAPL", f"{info['gpu']} / {info['rapl']}"],
            ["meter", f"{versions['meter']} (this checkout, {info['commit']})"],
            ["CodeCarbon", versions["codecarbon"] + " (PyPI `codecarbon`)"],
            ["Zeus", versions["zeus"] + " (PyPI `zeus`, formerly `zeus-ml`)"],
            ["numpy (workload)", versions["numpy"] + " in every environment"],
            ["torch (workload)", versions.get("torch", "?") + " in every environment"],
            ["Load average at start", ", ".join(f"{x:.2f}" for x in info["load"])],
        ],
    )
    lines += ["", "What each tool found to measure here:", "", *_what_measured(results["session"])]

    lines += ["", "### Summary", ""]
    lines += _summary(results)

    lines += [
        "",
        "### Import time",
        "",
        "Wall time of a fresh `python -c STATEMENT` minus a fresh `python -c pass` in the same "
        f"environment, paired, {plan['import_rounds']} rounds (the pair's order alternates; "
        "bytecode caches warm).",
        "",
        *_import_section(results["import"]),
        "",
        "### Start/stop latency of a tracked block",
        "",
        "In one process per tool and round: the tool imported and set up, then empty tracked "
        "blocks in a tight loop, timed in batches of at least 20 ms (up to 20 batches), the "
        "median batch giving the figure for that process. CodeCarbon is driven through its task "
        "API, as its documentation shows for measuring parts of a program; each `stop_task` "
        "measures power and energy. meter's default meter samples at 10 Hz meanwhile.",
        "",
        *_session_section(results["session"]),
        "",
        "### Memory",
        "",
        "RSS of the process (and of any child process a tool starts) from `/proc`: bare "
        "interpreter, after the import, 2 s after the whole-run tracker started, after the "
        "latency loop; peak RSS (`VmHWM`) at the end.",
        "",
        *_memory_section(results["session"]),
        "",
        "### Background CPU while idle",
        "",
        *_idle_section(results["idle"], plan),
        "",
        "### Slowdown of a CPU training loop",
        "",
        f"An MLP (784–1024–10, batch 256, float32, SGD) for {results['train']['steps']} "
        "steps, written twice: in numpy, and in PyTorch on the CPU (`nn.Sequential`, "
        "autograd, `optim.SGD`); timed after 10 warm-up steps and after the tool's set-up, on "
        "one BLAS thread (`OPENBLAS_NUM_THREADS=1`, `torch.set_num_threads(1)`: with one "
        "thread per core, OpenBLAS slows down erratically on this VM whenever anything else "
        "runs, by up to 40% between identical tool-less runs). The tools' background threads "
        f"can therefore run on the other of the {info['cores']} cores: these tables are the "
        "cost on the training thread, the idle table above the cost of the background "
        'sampling. "every step": each step a tracked block (meter `with meter.measure("step")`, '
        "CodeCarbon `start_task`/`stop_task`, Zeus `begin_window`/`end_window`), in blocks of "
        "10 steps that alternate with 10 unmeasured steps in the same process (the order "
        "flips every block): its slowdown is the measured steps against the unmeasured ones, "
        "because the drift between two processes on this VM (about ±1.5 %) is larger than the "
        'cost being measured; the process CPU of those rows covers both halves. "whole loop": '
        "one block around the loop (CodeCarbon `start()`/`stop()`), against a process without "
        'any tool in the same round: it includes the cost of the background sampling. The "no '
        "tool\" run uses the same framework, in meter's environment without importing meter. "
        "÷ meter compares loop times in the same round. meter's loop reads no step's figure "
        "(its windows are settled off the training thread, and totalled per name for the "
        "exporters); CodeCarbon's `stop_task` and Zeus's `end_window` return theirs.",
        "",
        *_budget_line(results["train"]),
        "",
    ]
    for fw in FRAMEWORKS:
        lines += [f"#### {fw}", "", *_train_section(results["train"], fw), ""]
    lines += [
        "The energy column is what each tool reported: every step, the sum of its blocks "
        "(meter: its per-name total of the step windows); whole loop, from the start of "
        "tracking, 1 s before the loop, to its end. None of it is a measurement here: see the "
        "list of what each tool found.",
        "",
    ]
    problems = []
    for name in ("session", "idle", "train"):
        problems += errors(name, results[name]["rounds"])
    if problems:
        lines += ["### Runs that failed", "", *problems, ""]
    lines += [*_raw(results), "", END]
    return "\n".join(lines)


def _budget_line(train: dict[str, Any]) -> list[str]:
    """meter's every-step slowdown per framework against `STEP_BUDGET_PCT`."""
    parts = []
    for fw in FRAMEWORKS:
        slow = stats(_slowdown(train["rounds"], f"{fw}:meter/step", fw))
        if not slow["n"]:
            parts.append(f"{fw}: not measured")
            continue
        verdict = "**PASS**" if slow["median"] < STEP_BUDGET_PCT else "**FAIL**"
        floor = stats(_slowdown(train["rounds"], f"{fw}:none/step", fw))
        empty = f" (empty blocks: {fmt(floor, 2, unit=' %')})" if floor["n"] else ""
        parts.append(f"{fw} {fmt(slow, 2, unit=' %')} {verdict}{empty}")
    return [
        f"Budget: meter measuring every step slows the loop by < {STEP_BUDGET_PCT:g} % "
        f"(median over the rounds): {'; '.join(parts)}. The empty blocks, timed the same "
        "way, show the method's noise floor."
    ]


def _loop_s(v: dict[str, Any]) -> float:
    return float(v["loop_s"])


def _slowdown(rounds: list[dict[str, Any]], key: str, fw: str) -> list[float]:
    """Per round, % slower than without the tool: for every-step rows, measured against the
    unmeasured blocks of the same process (``paired_pct``); else against the "no tool"
    process of the same round."""
    if key.endswith("/step"):
        return column(rounds, key, lambda v: v["paired_pct"])
    return [(x - 1) * 100 for x in paired(rounds, key, f"{fw}:none", _loop_s)]


def _summary(results: dict[str, Any]) -> list[str]:
    imp = results["import"]["rounds"]
    ses = results["session"]["rounds"]
    idle = results["idle"]["rounds"]
    train = results["train"]["rounds"]

    def cell(values: list[float], digits: int, unit: str, scale: float = 1.0) -> str:
        return fmt(stats(values), digits, scale, unit)

    def cmp(values: list[float], digits: int = 1) -> str:
        return ratio(values, digits) if values else "–"

    rows = [
        [
            "import",
            *(cell([row[t] for row in imp if t in row], 0, " ms") for t in TOOLS),
            cmp(paired(imp, "codecarbon", "meter", lambda v: v)),
            cmp(paired(imp, "zeus", "meter", lambda v: v)),
        ],
        [
            "empty tracked block",
            *(cell(column(ses, t, lambda x: x["block_s_median"]), 1, " µs", 1e6) for t in TOOLS),
            cmp(paired(ses, "codecarbon", "meter", lambda x: x["block_s_median"]), 0),
            cmp(paired(ses, "zeus", "meter", lambda x: x["block_s_median"]), 2),
        ],
        [
            "start a whole-run tracker",
            *(
                cell(column(ses, t, lambda x: x["setup_s"] + x["start_s"]), 1, " ms", 1e3)
                for t in TOOLS
            ),
            cmp(paired(ses, "codecarbon", "meter", lambda x: x["setup_s"] + x["start_s"]), 0),
            cmp(paired(ses, "zeus", "meter", lambda x: x["setup_s"] + x["start_s"]), 2),
        ],
        [
            "RSS added by import + start",
            *(
                cell(
                    column(ses, t, lambda x: x["rss_mb"]["started"] - x["rss_mb"]["python"]),
                    1,
                    " MB",
                )
                for t in TOOLS
            ),
            cmp(
                paired(
                    ses,
                    "codecarbon",
                    "meter",
                    lambda x: x["rss_mb"]["started"] - x["rss_mb"]["python"],
                )
            ),
            cmp(
                paired(
                    ses, "zeus", "meter", lambda x: x["rss_mb"]["started"] - x["rss_mb"]["python"]
                )
            ),
        ],
        [
            "idle CPU while tracking (default settings)",
            cell(column(idle, "meter", lambda x: x["cpu_pct"]), 2, " %"),
            cell(column(idle, "codecarbon-15s", lambda x: x["cpu_pct"]), 2, " %"),
            cell(column(idle, "zeus", lambda x: x["cpu_pct"]), 2, " %"),
            cmp(paired(idle, "codecarbon-15s", "meter", lambda x: x["cpu_s"])),
            cmp(paired(idle, "zeus", "meter", lambda x: x["cpu_s"]), 2),
        ],
    ]
    for fw, mode in [(fw, mode) for fw in FRAMEWORKS for mode in ("step", "run")]:
        text = "every step" if mode == "step" else "whole loop"
        cc = "codecarbon/step" if mode == "step" else "codecarbon-15s/run"
        keys = {
            "meter": f"{fw}:meter/{mode}",
            "codecarbon": f"{fw}:{cc}",
            "zeus": f"{fw}:zeus/{mode}",
        }
        rows.append(
            [
                f"{fw} training loop slowdown, measuring {text}",
                *(cell(_slowdown(train, keys[t], fw), 2, " %") for t in TOOLS),
                cmp(paired(train, keys["codecarbon"], keys["meter"], lambda v: v["loop_s"]), 2),
                cmp(paired(train, keys["zeus"], keys["meter"], lambda v: v["loop_s"]), 2),
            ]
        )
    header = ["metric (lower is better)", "meter", "CodeCarbon", "Zeus"]
    return [
        *table([*header, "CodeCarbon ÷ meter", "Zeus ÷ meter"], rows),
        "",
        "Ratios are medians of per-round ratios (min–max), so they need not equal the ratio of "
        "the medians beside them. The slowdown ratios compare loop times (1.00× = as fast as "
        "with meter). Zeus is cheap here because it has no device to read on this machine.",
    ]


def write_section(path: Path, section: str) -> None:
    """Replace the marked section of ``path``, or insert it before the real-GPU section, or
    append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    elif "\n<!-- gpu:begin" in text or "\n## Real GPU" in text:
        mark = "\n<!-- gpu:begin" if "\n<!-- gpu:begin" in text else "\n## Real GPU"
        head, tail = text.split(mark, 1)
        text = head.rstrip("\n") + "\n\n" + section + "\n" + mark + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    parser.add_argument(
        "--output", default=str(ROOT / "BENCHMARKS.md"), help="report whose section to replace"
    )
    parser.add_argument(
        "--json",
        default=str(VENVS / "compare-results.json"),
        help="raw results, for --from-json (default: .bench-venvs/compare-results.json)",
    )
    parser.add_argument(
        "--from-json", help="render from a results JSON written by --json (no measuring)"
    )
    args = parser.parse_args(argv)

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        section = render(
            saved["results"], saved["machine"], saved["versions"], saved["quick"], saved["wall_s"]
        )
        write_section(Path(args.output), section)
        print(f"wrote the comparison section of {args.output}", file=sys.stderr)
        return 0

    t_start = time.perf_counter()
    ensure_envs()
    plan = PLAN["quick" if args.quick else "full"]
    versions = {
        "meter": _version("meter", "ai-energy-meter"),
        "codecarbon": _version("codecarbon", "codecarbon"),
        "zeus": _version("zeus", "zeus"),
        "numpy": _version("meter", "numpy"),
        "torch": _version("meter", "torch"),
    }
    info = machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meter-compare-") as workdir:
        for name, bench in (
            ("import", bench_import),
            ("session", bench_session),
            ("idle", bench_idle),
            ("train", bench_train),
        ):
            t0 = time.perf_counter()
            print(f"{name}...", end=" ", flush=True, file=sys.stderr)
            results[name] = bench(plan, workdir)
            print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    wall_s = time.perf_counter() - t_start
    saved = {
        "machine": info,
        "versions": versions,
        "quick": args.quick,
        "wall_s": wall_s,
        "results": results,
    }
    Path(args.json).write_text(json.dumps(saved, indent=1))
    section = render(results, info, versions, args.quick, wall_s)
    write_section(Path(args.output), section)
    print(f"wrote the comparison section of {args.output}", file=sys.stderr)
    failed = any(
        "error" in result
        for name in ("session", "idle", "train")
        for row in results[name]["rounds"]
        for result in row.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks of the comparison scripts that need no GPU and no other tool installed.

    .venv/bin/python -m pytest benchmarks/compare -q     # about 30 s

``gpu_validate.py`` runs end to end on a simulated GPU (``--dry-run``); its report renders from
a saved result and from a fake one; ``run_compare.py`` renders and places its section;
``workloads.py`` runs its tasks for meter and for no tool in this interpreter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_validate
import run_compare
import workloads

# -- gpu_validate ---------------------------------------------------------------------------------


def test_arguments() -> None:
    args = gpu_validate.parse_args([])
    assert (args.gpu, args.quick, args.dry_run, args.into) == (0, False, False, None)
    with pytest.raises(SystemExit):
        gpu_validate.parse_args(["--dry-run", "--into", "BENCHMARKS.md"])


def test_reference_interpolates_between_updates() -> None:
    # A counter updated every 0.1 s under 100 W: 10 J per update, seen to +-0.5 ms.
    events = [(0.1 * k, 0.0005, 10.0 * k) for k in range(11)]
    ref = gpu_validate.Reference(events)
    energy, bracket = ref.between(0.25, 0.75)
    assert energy == pytest.approx(50.0)
    assert bracket == pytest.approx(10.0)  # outer 0.2..0.8 = 60 J, inner 0.3..0.7 = 40 J
    assert ref.update_period_s() == pytest.approx(0.1)
    assert ref.between(-1.0, 0.5) == (None, None)  # before the first update: unknown


def _fake_result(dry_run: bool = False) -> dict[str, Any]:
    """A result as `gpu_validate.run` returns it, with made-up figures (for rendering only)."""
    windows = []
    for load in gpu_validate.LOADS:
        for length in (0.01, 1.0):
            for tool, err in (("meter", 0.2), ("sampled-100ms", 2.0), ("zeus", 5.0)):
                windows.append(
                    {
                        "load": load,
                        "window_s": length,
                        "tool": tool,
                        "duration_s": length,
                        "energy_j": 300 * length * (1 + err / 100),
                        "ref_j": 300 * length,
                        "err_pct": err,
                        "bracket_pct": 1.0,
                        "ref_dynamic_j": 240 * length,
                        "dynamic_energy_j": 241 * length,
                        "ref_excluded": False,
                    }
                )
    return {
        "dry_run": dry_run,
        "quick": False,
        "date": "2030-01-01 00:00 UTC",
        "wall_s": 300.0,
        "machine": {
            "gpu": "FAKE GPU",
            "driver": "1.0",
            "cuda": "12.0",
            "power_limit_w": 700.0,
            "python": "CPython 3.11",
            "os": "Linux",
            "cpu_count": 16,
            "meter": "0.1.0",
            "nvidia-ml-py": "13",
            "torch": "2",
            "codecarbon": "not installed",
            "zeus": "0.16.0",
        },
        "counter_update_period_s": 0.02,
        "reference_resolution_s": {"median": 0.0005, "p99": 0.001, "max": 0.002},
        "counter_updates": 1000,
        "idle": {"counter_w": 60.0, "power_usage_mean_w": 61.0, "direct_w": 60.1, "seconds": 20},
        "windows": windows,
        "fields": {
            "instant": {
                "samples": 100,
                "mean_w": 200.0,
                "counter_mean_w": 199.0,
                "mad_w": 20.0,
                "best_lag_s": 0.0,
                "mad_at_best_lag_w": 20.0,
            },
            "average": None,
        },
        "training": {
            "steps": 10,
            "rounds": 1,
            "modes": [
                {
                    "mode": "no metering",
                    "step_ms": [30.0],
                    "ratio": [1.0],
                    "ref_j_per_step": [9.0],
                    "meter_j_per_step": [],
                },
                {
                    "mode": "meter every step, sync_cuda=True",
                    "step_ms": [30.3],
                    "ratio": [1.01],
                    "ref_j_per_step": [9.1],
                    "meter_j_per_step": [9.05],
                },
            ],
        },
        "loads": {"steady": "fake"},
        "tools": {"meter": "meter, counter", "sampled-100ms": "meter, sampled", "zeus": "Zeus"},
        "tool_methods": {},
        "intervals_s": [0.1],
        "poll_s": 0.001,
        "notes": ["CodeCarbon skipped: ModuleNotFoundError: No module named 'codecarbon'"],
        "plan": {"idle_s": 20.0, "trace_s": 10.0, "train_steps": 10, "train_rounds": 1},
    }


def test_render_a_gpu_result_and_place_it(tmp_path: Path) -> None:
    text = gpu_validate.render(_fake_result())
    assert text.startswith(gpu_validate.BEGIN) and text.endswith(gpu_validate.END)
    assert "## Real GPU: FAKE GPU" in text and "DRY RUN" not in text
    assert "| meter on the counter, windows >= 1 s, steady load | 0.20 | 1% | **PASS** |" in text
    assert "CodeCarbon skipped" in text

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# B\n\n## Real GPU\n\nNo GPU yet.\n\n## Known gaps\n\n- one\n")
    gpu_validate.write_section(report, text)
    placed = report.read_text()
    assert "No GPU yet" not in placed and "## Known gaps" in placed and text in placed
    gpu_validate.write_section(report, text)  # a second run replaces its own section
    assert report.read_text() == placed


def test_render_a_dry_run_says_so() -> None:
    text = gpu_validate.render(_fake_result(dry_run=True))
    assert "DRY RUN on a simulated GPU (not GPU results)" in text
    assert gpu_validate.BEGIN not in text  # it can never be placed into BENCHMARKS.md


def test_dry_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert gpu_validate.main(["--dry-run", "--json", "r.json", "--markdown", "r.md"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["dry_run"] is True
    assert {row["tool"] for row in result["windows"]} == {
        "meter",
        "sampled-10ms",
        "sampled-100ms",
        "sampled-500ms",
        "sampled-avg-100ms",
    }
    assert abs(result["counter_update_period_s"] - 0.1) < 0.01  # the simulator's period
    long = [r for r in result["windows"] if r["window_s"] >= 1 and r["tool"] == "meter"]
    assert long and all(r.get("true_j") for r in long)
    steady = [r for r in long if r["load"] == "steady"]
    assert all(abs(r["true_err_pct"]) < 1 for r in steady)  # meter vs the simulator's truth
    assert "DRY RUN" in (tmp_path / "r.md").read_text()
    assert gpu_validate.main(["--render", "r.json", "--markdown", "again.md"]) == 0
    assert (tmp_path / "again.md").read_text() == (tmp_path / "r.md").read_text()


# -- run_compare and workloads --------------------------------------------------------------------


def test_workloads_run_for_meter_and_no_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_ZONE", "DE")
    monkeypatch.setenv("METER_IDLE_FILE", "/nonexistent/idle.json")
    monkeypatch.delenv("METER_SIMULATE_GPUS", raising=False)
    opts = {"cycles": 1, "batches": 3, "settle_s": 0.1, "latency_budget_s": 0.1}
    meter_run = workloads.session(workloads.Meter(opts), opts)
    assert 0 < meter_run["block_s_median"] < 0.01
    assert meter_run["rss_mb"]["imported"] >= meter_run["rss_mb"]["python"]
    train = workloads.train(workloads.Tool({}), {"mode": "none", "steps": 3, "hidden": 64})
    assert train["loop_s"] > 0 and "report" not in train
    train = workloads.train(workloads.Meter({}), {"mode": "step", "steps": 3, "hidden": 64})
    assert train["report"]["blocks"] == 3
    assert train["report"]["energy_j"] is not None  # meter's per-name total of the steps
    assert train["plain_s"] > 0 and "paired_pct" in train
    torch_opts = {"mode": "step", "steps": 4, "block": 2, "hidden": 64, "framework": "torch"}
    train = workloads.train(workloads.Meter({}), torch_opts)
    assert train["framework"] == "torch" and train["report"]["blocks"] == 4


def _fake_compare() -> dict[str, Any]:
    def session(block: float) -> dict[str, Any]:
        return {
            "block_s_median": block,
            "first_block_s": block * 2,
            "setup_s": 0.05,
            "start_s": 0.01,
            "stop_s": 0.001,
            "cycle_s": [0.002],
            "rss_mb": {"python": 10, "imported": 14, "started": 20, "after_blocks": 21, "end": 21},
            "vm_hwm_mb": 22,
            "threads_started": 2,
            "describe": {},
            "stopped_report": {},
        }

    def idle(pct: float) -> dict[str, Any]:
        return {"cpu_pct": pct, "cpu_s": pct / 10, "threads": 2, "child_processes": 0}

    def train(key: str, loop: float) -> dict[str, Any]:
        out = {"loop_s": loop, "cpu_s": loop, "steps": 100, "report": {"energy_j": 10.0}}
        if key.endswith("/step"):  # measured blocks against unmeasured ones, one process
            out["plain_s"] = 1.0
            out["paired_pct"] = (loop - 1.0) * 100
        return out

    return {
        "import": {"rounds": [{"meter": 40.0, "codecarbon": 90.0, "zeus": 1300.0}]},
        "session": {
            "rounds": [
                {"meter": session(13e-6), "codecarbon": session(5e-4), "zeus": {"error": "boom"}}
            ]
        },
        "idle": {"rounds": [{key: idle(0.1) for key in run_compare.IDLE_CONFIGS}]},
        "train": {
            "steps": 100,
            "rounds": [
                {
                    key: train(key, 1.0 + (0.004 if "meter" in key else i / 10))
                    if not key.endswith("none/step")
                    else train(key, 1.0005)
                    for i, key in enumerate(run_compare.TRAIN_CONFIGS)
                }
            ],
        },
    }


def test_compare_renders_and_places_its_section(tmp_path: Path) -> None:
    info = {
        "cpu": "CPU",
        "cores": 2,
        "memory_gib": 1.0,
        "os": "Linux",
        "python": "CPython",
        "rapl": "no",
        "gpu": "none",
        "commit": "abc",
        "load": (0.0, 0.0, 0.0),
    }
    versions = {"meter": "0.1.0", "codecarbon": "3", "zeus": "0.16", "numpy": "2"}
    text = run_compare.render(_fake_compare(), info, versions, quick=True, wall_s=60.0)
    assert text.startswith(run_compare.BEGIN) and text.endswith(run_compare.END)
    assert "| import | 40 ms | 90 ms | 1,300 ms | 2.25× | 32.5× |" in text
    assert "**boom**" in text  # a failed run is reported, not hidden
    # meter's every-step cost is judged on the paired in-process figure, per framework.
    assert (
        "Budget: meter measuring every step slows the loop by < 0.5 % (median over the rounds): "
        "numpy 0.40 % **PASS** (empty blocks: 0.05 %); torch 0.40 % **PASS** (empty blocks: "
        "0.05 %). The empty blocks, timed the same way, show the method's noise floor." in text
    )
    assert "| numpy training loop slowdown, measuring every step | 0.40 % |" in text

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# B\n\n## 5. Accuracy\n\nx\n\n## Real GPU\n\nnone\n")
    run_compare.write_section(report, text)
    placed = report.read_text()
    assert placed.index(run_compare.BEGIN) < placed.index("## Real GPU")
    run_compare.write_section(report, text)
    assert report.read_text() == placed

"""`meter.report.records`: runs read back from JSONL, and the figures summarised from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from meter.exporters.jsonl import JsonlWriter

from meter.report import ReportError, main, read_runs, select, summarise, window_spans
from meter.report.records import MAX_SPANS, group_runs
from tests.meter.report.synthetic import write_file


def test_totals_per_run_and_device(tmp_path: Path) -> None:
    [written] = write_file(tmp_path / "r.jsonl")
    [run] = read_runs(tmp_path / "r.jsonl")
    s = summarise([run])["runs"][0]
    rec = written.run
    assert s["energy_j"] == pytest.approx(rec["energy_j"])
    assert s["energy_j"] == pytest.approx(sum(d["energy_j"] for d in s["devices"].values()))
    # The device total is the sum of its timeline buckets (1 s each).
    for key, d in s["devices"].items():
        assert d["energy_j"] == pytest.approx(sum(rec["timeline"]["devices"][key]["mean_w"]))
    assert {k: d["method"] for k, d in s["devices"].items()} == {
        "gpu:0": "simulated",
        "gpu:1": "simulated",
        "cpu:0": "estimated",
    }
    assert all(d["estimate"] for d in s["devices"].values())
    assert s["estimate"] is True
    assert s["carbon"]["zone"] == "DE" and s["carbon"]["pue"] == 1.1
    assert s["co2e_market_g"] == pytest.approx(s["co2e_g"] * 0.5)
    assert [z["zone"] for z in s["compare_zones"]] == ["FR", "PL"]
    assert s["timeline"]["buckets"] == len(rec["timeline"]["devices"]["gpu:0"]["mean_w"])
    assert s["run_id"] == rec["run_id"]


def test_totals_per_window_name(tmp_path: Path) -> None:
    [written] = write_file(tmp_path / "r.jsonl", epochs=4)
    s = summarise(read_runs(tmp_path / "r.jsonl"))["runs"][0]
    assert set(s["windows"]) == {"epoch", "validation"}
    for name, w in s["windows"].items():
        mine = [r for r in written.windows if r["name"] == name]
        assert w["count"] == len(mine) == 4
        assert w["energy_j"] == pytest.approx(sum(r["energy_j"] for r in mine))
        assert w["mean_energy_j"] == pytest.approx(w["energy_j"] / 4)
        assert w["duration_s"] == pytest.approx(sum(r["duration_s"] for r in mine))
        for key, d in w["devices"].items():
            assert d["energy_j"] == pytest.approx(sum(r["devices"][key]["energy_j"] for r in mine))
        assert w["methods"] == ["estimated", "simulated"]


def test_series_across_runs_shows_the_regression(tmp_path: Path) -> None:
    written = write_file(tmp_path / "r.jsonl", runs=4)  # the last run draws 30 % more
    series = summarise(read_runs(tmp_path / "r.jsonl"))["series"]
    assert series["index"] == [0, 1, 2, 3]
    assert series["energy_j"] == pytest.approx([w.run["energy_j"] for w in written])
    epoch = series["window_mean_energy_j"]["epoch"]
    assert max(epoch[:3]) < 1.1 * min(epoch[:3])
    assert epoch[3] > 1.2 * max(epoch[:3])
    assert series["start_time"] == sorted(series["start_time"])


def test_windows_join_their_run_by_id_or_position() -> None:
    def window(name: str, run_id: str | None = None) -> dict[str, object]:
        rec: dict[str, object] = {"kind": "window", "name": name, "energy_j": 1.0, "devices": {}}
        if run_id:
            rec["run_id"] = run_id
        return rec

    records = [
        window("old"),  # written before run_id existed: belongs to the next run record
        {"kind": "run", "name": "a", "energy_j": 5.0},
        window("epoch", "b" * 32),
        window("epoch", "c" * 32),  # two runs writing to one file at once
        {"kind": "run", "name": "c", "run_id": "c" * 32},
        {"kind": "run", "name": "b", "run_id": "b" * 32},
        {"name": "library sink record without kind"},
    ]
    runs = group_runs(records)
    assert [r.name for r in runs] == ["a", "c", "b"]
    assert [len(r.windows) for r in runs] == [1, 1, 1]
    assert runs[0].windows[0]["name"] == "old"
    assert runs[2].windows[0]["run_id"] == "b" * 32


def test_old_records_without_timeline(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl", timeline=False, compare=False)
    [run] = read_runs(tmp_path / "r.jsonl")
    s = summarise([run])["runs"][0]
    assert run.timeline is None and s["timeline"] is None
    assert s["compare_zones"] == []
    assert s["energy_j"] > 0


def test_select(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl", runs=3)
    runs = read_runs(tmp_path / "r.jsonl")
    assert select(runs, "all") == runs
    assert select(runs, None) == runs
    assert select(runs, "1") == [runs[1]]
    assert select(runs, "-1") == [runs[2]]
    assert select(runs, "train_cpu.py") == runs
    with pytest.raises(ReportError, match=r"no run of that name; the file has: train_cpu\.py"):
        select(runs, "nope")
    with pytest.raises(ReportError, match="has 3 run"):
        select(runs, "3")


def test_window_spans_of_many_requests_are_merged() -> None:
    windows = [
        {"name": "request", "start_time": 100.0 + i * 0.01, "end_time": 100.0 + i * 0.01 + 0.004}
        for i in range(5000)
    ] + [{"name": "epoch", "start_time": 100.0, "end_time": 150.0}]
    groups = {g.name: g for g in window_spans(windows, origin=100.0)}
    assert groups["epoch"].spans == ((0.0, 50.0),) and not groups["epoch"].merged
    req = groups["request"]
    assert req.count == 5000 and req.merged
    assert 1 <= len(req.spans) <= MAX_SPANS
    assert req.spans[0][0] == 0.0 and req.spans[-1][1] == pytest.approx(49.994)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json at all\n", "is not a JSONL file of meter records"),
        ("", "is not a JSONL file of meter records: it is empty"),
        ('{"kind": "window", "name": "epoch"}\n', "has no run record"),
    ],
    ids=["missing", "not-json", "empty", "no-run-record"],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "runs.jsonl"
    if content is not None:
        path.write_text(content)
    assert main([str(path), "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("meter report: ") and err.count("\n") == 1


def test_unknown_run_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_file(tmp_path / "r.jsonl")
    assert main([str(tmp_path / "r.jsonl"), "--run", "7"]) == 2
    assert "--run 7: the file has 1 run(s)" in capsys.readouterr().err


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl")
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write('{"kind": "window", "na')
    assert len(read_runs(tmp_path / "r.jsonl")) == 1


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_file(tmp_path / "r.jsonl", runs=2)
    assert main([str(tmp_path / "r.jsonl"), "--format", "json", "--run", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in out["runs"]] == [0]
    assert out["series"]["window_mean_energy_j"]["epoch"][0] > 0


_NO_PLOTLY = (
    "import sys; sys.modules['plotly'] = None; "  # `import plotly` now raises ImportError
    "from meter.report import main; sys.exit(main(sys.argv[1:]))"
)


def test_without_plotly_html_says_how_to_install_and_json_works(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl")
    html = subprocess.run(
        [sys.executable, "-c", _NO_PLOTLY, str(tmp_path / "r.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert html.returncode == 2
    assert "pip install '.[report]'" in html.stderr
    assert "Traceback" not in html.stderr and html.stderr.count("\n") == 1
    assert not (tmp_path / "r.html").exists()
    js = subprocess.run(
        [sys.executable, "-c", _NO_PLOTLY, str(tmp_path / "r.jsonl"), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert js.returncode == 0, js.stderr
    assert json.loads(js.stdout)["runs"][0]["name"] == "train_cpu.py"


def test_jsonl_writer_records_round_trip(tmp_path: Path) -> None:
    """Records written by hand through JsonlWriter (NaN becomes null) still summarise."""
    w = JsonlWriter(tmp_path / "r.jsonl", fsync=False)
    w.write({"kind": "run", "name": "x", "energy_j": float("nan"), "devices": {}})
    s = summarise(read_runs(tmp_path / "r.jsonl"))["runs"][0]
    assert s["energy_j"] is None and s["devices"] == {} and s["windows"] == {}

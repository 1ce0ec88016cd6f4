"""`meter.report.html`: the figures drawn from the records, and the page that holds them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the HTML report needs plotly (pip install '.[report]')")

from meter.report import main, read_runs, summarise
from meter.report.html import (
    carbon_figure,
    device_energy_figure,
    render,
    timeline_figure,
    trend_figure,
    window_energy_figure,
    window_trend_figure,
)
from tests.meter.report.synthetic import write_file


def test_timeline_marks_estimates_and_shades_windows(tmp_path: Path) -> None:
    [written] = write_file(tmp_path / "r.jsonl", epochs=4)
    [run] = read_runs(tmp_path / "r.jsonl")
    fig = timeline_figure(run)
    lines = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in lines] == [
        "gpu:0 (simulated, not measured)",
        "gpu:1 (simulated, not measured)",
        "cpu:0 (estimated, not measured)",
    ]
    assert all(t.line.dash == "dash" for t in lines)
    tl = written.run["timeline"]["devices"]["gpu:0"]
    assert list(lines[0].y) == tl["mean_w"]
    # The band: max, then min filled to it.
    assert list(fig.data[0].y) == tl["max_w"] and list(fig.data[1].y) == tl["min_w"]
    assert fig.data[1].fill == "tonexty"
    # 8 windows, one shaded span each; each name labelled once.
    assert len(fig.layout.shapes) == 8
    assert [a.text for a in fig.layout.annotations if "×" in a.text] == [
        "epoch ×4",
        "validation ×4",
    ]
    first_epoch = min(w["start_time"] for w in written.windows) - written.run["start_time"]
    assert fig.layout.shapes[0].x0 == pytest.approx(first_epoch)


def test_energy_figures_carry_the_method(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl")
    s = summarise(read_runs(tmp_path / "r.jsonl"))["runs"][0]
    dev = device_energy_figure(s)
    assert {t.name.split(":")[0] for t in dev.data} == {"simulated", "estimated"}
    by_x = {x: y for t in dev.data for x, y in zip(t.x, t.y, strict=True)}
    assert by_x["gpu:0"] == pytest.approx(s["devices"]["gpu:0"]["energy_j"] / 3600)
    assert all(t.marker.pattern.shape == "/" for t in dev.data)  # hatched: estimates
    win = window_energy_figure(s)
    assert list(win.data[0].x) == ["epoch ×4", "validation ×4"]
    epoch_total = sum(t.y[0] for t in win.data)
    assert epoch_total == pytest.approx(s["windows"]["epoch"]["energy_j"] / 3600)
    co2 = carbon_figure(s)
    assert list(co2.data[0].y) == [s["co2e_g"], s["co2e_market_g"], s["embodied_co2e_g"]]
    assert list(co2.data[1].x) == ["what-if FR", "what-if PL"]
    assert "estimated" in co2.layout.title.text


def test_trend_figures(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl", runs=3)
    series = summarise(read_runs(tmp_path / "r.jsonl"))["series"]
    fig = trend_figure(series)
    assert len(fig.data) == 3  # energy, duration, CO2e of the one run name
    assert list(fig.data[1].y) == series["duration_s"]
    wt = window_trend_figure(series)
    assert [t.name for t in wt.data] == ["mean per epoch", "mean per validation"]
    assert list(wt.data[0].y) == pytest.approx(
        [v / 3600 for v in series["window_mean_energy_j"]["epoch"]]
    )


def test_page_is_self_contained(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl", runs=2)
    page = render(read_runs(tmp_path / "r.jsonl"), source="r.jsonl")
    assert page.count("<script") == page.count("</script>")
    assert not re.search(r"<script[^>]+src=", page), "no external scripts"
    assert not re.search(r"<link[^>]+href=", page), "no external stylesheets"
    assert page.count("* plotly.js v") == 1  # plotly.js inlined once
    assert page.count('class="plotly-graph-div"') == 2 + 2 * 4  # trends; per run 4 charts
    assert 'id="meter-js-errors"' in page
    for text in ("zone", "DE", "provider", "embedded", "PUE", "1.10", "meter 0.1.0", "what-if FR"):
        assert text in page
    assert '<span class="est"' in page  # estimates marked in the tables


def test_old_record_totals_only(tmp_path: Path) -> None:
    write_file(tmp_path / "r.jsonl", timeline=False)
    page = render(read_runs(tmp_path / "r.jsonl"))
    assert "no power timeline" in page
    assert page.count('class="plotly-graph-div"') == 3


def test_cli_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_file(tmp_path / "r.jsonl")
    assert main([str(tmp_path / "r.jsonl")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1_000_000
    assert "wrote" in capsys.readouterr().err
    assert main([str(tmp_path / "r.jsonl"), "-o", str(tmp_path / "r.jsonl")]) == 2
    assert "is the input file" in capsys.readouterr().err

"""The HTML report: plotly figures of the summarised runs, in one self-contained page.

plotly.js is inlined once in the page's head (about 4.6 MB), so the file opens offline: no CDN,
no network. Estimates are never drawn as measurements: a device whose method is ``estimated``
or ``simulated`` is drawn dashed (lines) or hatched (bars), and its legend entry, hover text
and table row say so.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Mapping, Sequence
from typing import Any

from meter.report.records import (
    ReportError,
    Run,
    SpanGroup,
    is_estimate,
    method_note,
    summarise,
    window_spans,
)

J_PER_WH = 3600.0
#: Runs drawn in detail (timeline, devices, windows); the trend charts cover every run.
MAX_DETAILED_RUNS = 10
_DEVICE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_WINDOW_COLOURS = ("#4c9be8", "#f2a541", "#5cb85c", "#c77dff", "#e86a6a", "#8d99ae", "#2ec4b6")
_METHOD_COLOURS = {
    "counter": "#3a78c2",
    "sampled": "#5a9bd8",
    "estimated": "#e8b04a",
    "simulated": "#f08a50",
}
INSTALL_HINT = (
    "the HTML report needs plotly: pip install 'ai-energy-meter[report]' "
    "(from a checkout: pip install '.[report]'); --format json works without it"
)

# Errors in the page's JavaScript are written into #meter-js-errors (shown in red when any), so
# that a reader sees a broken chart's cause and a headless browser's DOM dump can be checked.
_ERROR_TRAP = """<script>
(function () {
  function note(msg) {
    var box = document.getElementById("meter-js-errors");
    if (!box) { window.__meterErrors = (window.__meterErrors || []).concat([msg]); return; }
    box.textContent += msg + "\\n";
  }
  window.addEventListener("error", function (e) {
    note("error: " + e.message + " (" + (e.filename || "") + ":" + (e.lineno || 0) + ")");
  });
  window.addEventListener("unhandledrejection", function (e) {
    note("unhandled rejection: " + e.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    note("console.error: " + Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  document.addEventListener("DOMContentLoaded", function () {
    (window.__meterErrors || []).forEach(note);
  });
})();
</script>"""

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1400px; padding: 12px 24px; color: #222; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.25em; margin-top: 1.6em;
border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
.meta { color: #555; font-size: 0.9em; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.est { color: #b35900; font-weight: 600; }
.badge { display: inline-block; padding: 1px 6px; border-radius: 3px; font-size: 0.8em;
         background: #fff1e0; color: #b35900; border: 1px solid #f0c890; }
#meter-js-errors { color: #b00; white-space: pre-wrap; }
#meter-js-errors:empty { display: none; }
"""


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ReportError(INSTALL_HINT) from None
    return go


def _wh(j: float | None) -> float | None:
    return None if j is None else j / J_PER_WH


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _when(t: float | None) -> str:
    if t is None:
        return "–"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _device_label(key: str, method: str | None) -> str:
    tag = f"{method}, not measured" if is_estimate(method) else str(method)
    return f"{key} ({tag})"


def _layout(fig: Any, title: str, **kw: Any) -> Any:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        height=kw.pop("height", 380),
        legend={"orientation": "h", "y": -0.18},
        **kw,
    )
    return fig


# -- the figures -------------------------------------------------------------------------------


def timeline_figure(run: Run) -> Any:
    """Power over time per device (mean line, min-max band), the windows shaded and labelled."""
    go = _plotly()
    tl = run.timeline
    if tl is None:
        return None
    fig = go.Figure()
    t0 = float(tl.get("t0") or run.start_time)
    bucket = float(tl.get("bucket_s") or 1.0)
    origin = run.start_time or t0
    for i, (key, d) in enumerate(tl["devices"].items()):
        mean = list(d.get("mean_w") or [])
        lo = list(d.get("min_w") or [None] * len(mean))
        hi = list(d.get("max_w") or [None] * len(mean))
        x = [t0 - origin + (j + 0.5) * bucket for j in range(len(mean))]
        colour = _DEVICE_COLOURS[i % len(_DEVICE_COLOURS)]
        method = d.get("method")
        label = _device_label(key, method)
        group = f"dev-{key}"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=hi,
                mode="lines",
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=group,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=lo,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_alpha(colour, 0.18),
                hoverinfo="skip",
                showlegend=False,
                legendgroup=group,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                mode="lines",
                name=label,
                legendgroup=group,
                line={
                    "color": colour,
                    "width": 2,
                    "dash": "dash" if is_estimate(method) else "solid",
                },
                customdata=[[a, b] for a, b in zip(lo, hi, strict=False)],
                hovertemplate=(
                    f"{html.escape(key)}: %{{y:.1f}} W (min %{{customdata[0]:.1f}}, "
                    f"max %{{customdata[1]:.1f}})<br>{method_note(method)}<extra></extra>"
                ),
            )
        )
    shade_windows(fig, window_spans(run.windows, origin))
    return _layout(
        fig,
        f"Power per device, W ({bucket:g} s buckets: mean line, min-max band); "
        "the command's windows shaded",
        xaxis_title="seconds since the run started",
        yaxis_title="W",
        hovermode="x unified",
        height=440,
    )


def _alpha(hex_colour: str, a: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{a})"


def shade_windows(fig: Any, groups: Sequence[SpanGroup]) -> None:
    """Shade each window name's spans in one colour, label the name once (with its count)."""
    shapes = []
    annotations = []
    for i, g in enumerate(groups):
        colour = _WINDOW_COLOURS[i % len(_WINDOW_COLOURS)]
        for a, b in g.spans:
            shapes.append(
                {
                    "type": "rect",
                    "xref": "x",
                    "yref": "paper",
                    "x0": a,
                    "x1": b,
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": _alpha(colour, 0.13),
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
        if not g.spans:
            continue
        text = f"{g.name} ×{g.count}" if g.count > 1 else g.name
        if g.merged:
            text += f" (merged: gaps < {g.gap_s:.3g} s)"
        annotations.append(
            {
                "x": g.spans[0][0],
                "xref": "x",
                "y": 1 - 0.07 * (i % 5),
                "yref": "paper",
                "text": html.escape(text),
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 11, "color": colour},
                "bgcolor": "rgba(255,255,255,0.7)",
            }
        )
    fig.update_layout(shapes=shapes, annotations=annotations)


def _method_bars(
    go: Any, categories: list[str], values: list[float | None], methods: list[str | None]
) -> list[Any]:
    """One bar trace per method, so that the legend says which bars are estimates."""
    traces = []
    for method in dict.fromkeys(methods):
        idx = [i for i, m in enumerate(methods) if m == method]
        est = is_estimate(method)
        traces.append(
            go.Bar(
                x=[categories[i] for i in idx],
                y=[values[i] for i in idx],
                name=f"{method}: {method_note(method)}",
                text=[f"{method}" + (" (estimate)" if est else "") for _ in idx],
                textposition="auto",
                marker={
                    "color": _METHOD_COLOURS.get(method or "", "#f0a050"),
                    "pattern": {"shape": "/" if est else ""},
                },
                hovertemplate="%{x}: %{y:.3f} Wh<br>" + method_note(method) + "<extra></extra>",
            )
        )
    return traces


def device_energy_figure(summary: Mapping[str, Any]) -> Any:
    """Energy per device, each bar marked with its method."""
    go = _plotly()
    devices = summary["devices"]
    fig = go.Figure(
        _method_bars(
            go,
            list(devices),
            [_wh(d["energy_j"]) for d in devices.values()],
            [d["method"] for d in devices.values()],
        )
    )
    return _layout(fig, "Energy per device, Wh", yaxis_title="Wh", barmode="group")


def window_energy_figure(summary: Mapping[str, Any]) -> Any:
    """Energy per window name, stacked by device (hatched where a device is estimated)."""
    go = _plotly()
    windows = summary["windows"]
    if not windows:
        return None
    keys = list(dict.fromkeys(k for w in windows.values() for k in w["devices"]))
    fig = go.Figure()
    for i, key in enumerate(keys):
        methods = [w["devices"].get(key, {}).get("method") for w in windows.values()]
        method = next((m for m in methods if m), None)
        est = is_estimate(method)
        fig.add_trace(
            go.Bar(
                x=[f"{n} ×{w['count']}" for n, w in windows.items()],
                y=[_wh(w["devices"].get(key, {}).get("energy_j")) for w in windows.values()],
                name=_device_label(key, method),
                marker={
                    "color": _DEVICE_COLOURS[i % len(_DEVICE_COLOURS)],
                    "pattern": {"shape": "/" if est else ""},
                },
                hovertemplate=f"{html.escape(key)}: %{{y:.3f}} Wh<br>{method_note(method)}"
                "<extra></extra>",
            )
        )
    return _layout(
        fig,
        "Energy per window name (all windows of the name), Wh",
        yaxis_title="Wh",
        barmode="stack",
    )


def carbon_figure(summary: Mapping[str, Any]) -> Any:
    """CO2e location-based, market-based and embodied side by side, and the what-if zones."""
    go = _plotly()
    zone = summary["carbon"]["zone"] or "?"
    cats = [f"location-based ({zone})", "market-based", "embodied"]
    vals = [summary["co2e_g"], summary["co2e_market_g"], summary["embodied_co2e_g"]]
    fig = go.Figure(
        go.Bar(
            x=cats,
            y=vals,
            name="this run",
            marker={"color": ["#3a78c2", "#5cb85c", "#8d99ae"]},
            text=[_fmt(v) if v is not None else "n/a" for v in vals],
            textposition="auto",
            hovertemplate="%{x}: %{y:.3f} g CO2e<extra></extra>",
        )
    )
    zones = summary["compare_zones"]
    if zones:
        fig.add_trace(
            go.Bar(
                x=[f"what-if {z.get('zone')}" for z in zones],
                y=[z.get("co2e_g") for z in zones],
                name="what-if zones (location-based, yearly mean)",
                marker={"color": "#c9a227"},
                customdata=[[z.get("name") or "", z.get("g_per_kwh")] for z in zones],
                hovertemplate="%{x} (%{customdata[0]}): %{y:.3f} g at %{customdata[1]:.0f} "
                "g/kWh<extra></extra>",
            )
        )
    note = " (from estimated energy)" if summary["estimate"] else ""
    return _layout(fig, f"CO2e, g{note}", yaxis_title="g CO2e", showlegend=bool(zones))


def trend_figure(series: Mapping[str, Any]) -> Any:
    """Across runs: energy, duration and CO2e per run over time, one line per run name."""
    go = _plotly()
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=("energy per run, Wh", "duration per run, s", "CO2e per run, g"),
    )
    x = [_iso(t) for t in series["start_time"]]
    names = list(dict.fromkeys(series["name"]))
    for i, name in enumerate(names):
        idx = [j for j, n in enumerate(series["name"]) if n == name]
        colour = _DEVICE_COLOURS[i % len(_DEVICE_COLOURS)]
        for row, field, scale in (
            (1, "energy_j", 1 / J_PER_WH),
            (2, "duration_s", 1.0),
            (3, "co2e_g", 1.0),
        ):
            vals = [series[field][j] for j in idx]
            fig.add_trace(
                go.Scatter(
                    x=[x[j] for j in idx],
                    y=[v * scale if v is not None else None for v in vals],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=row == 1,
                    line={"color": colour},
                    customdata=[series["index"][j] for j in idx],
                    hovertemplate=f"{html.escape(name)} run %{{customdata}}: %{{y:.3f}}"
                    "<extra></extra>",
                ),
                row=row,
                col=1,
            )
    return _layout(fig, "Across runs", height=640)


def window_trend_figure(series: Mapping[str, Any]) -> Any:
    """Mean energy of each window name per run: a regression per epoch stands out."""
    go = _plotly()
    means = series["window_mean_energy_j"]
    if not means:
        return None
    x = [_iso(t) for t in series["start_time"]]
    fig = go.Figure()
    for i, (name, vals) in enumerate(means.items()):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[_wh(v) for v in vals],
                mode="lines+markers",
                name=f"mean per {name}",
                line={"color": _WINDOW_COLOURS[i % len(_WINDOW_COLOURS)]},
                customdata=series["index"],
                hovertemplate=f"run %{{customdata}}: %{{y:.4f}} Wh per {html.escape(name)}"
                "<extra></extra>",
            )
        )
    return _layout(fig, "Mean energy per window, per run, Wh", yaxis_title="Wh")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# -- tables ------------------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are text (left-aligned). Cells are HTML."""
    cls = [' class="l"' if i < left else "" for i in range(len(head))]
    out = ["<table><tr>"]
    out += [f"<th{c}>{html.escape(h)}</th>" for c, h in zip(cls, head, strict=True)]
    out.append("</tr>")
    for row in rows:
        out.append(
            "<tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(cls, row, strict=True)) + "</tr>"
        )
    out.append("</table>")
    return "".join(out)


def _method_cell(method: str | None) -> str:
    if is_estimate(method):
        return f'<span class="est" title="{html.escape(method_note(method))}">{_fmt(method)}</span>'
    return _fmt(method)


def _device_table(s: Mapping[str, Any]) -> str:
    rows = [
        [
            html.escape(k),
            html.escape(d["model"]),
            _method_cell(d["method"]),
            html.escape(method_note(d["method"])),
            _fmt(d["energy_j"], 1),
            _fmt(_wh(d["energy_j"]), 3),
            _fmt(d["avg_power_w"], 1),
            _fmt(d["peak_power_w"], 1),
            _fmt(d["co2e_g"], 3),
            _fmt(d["co2e_market_g"], 3),
            _fmt(d["embodied_co2e_g"], 3),
            html.escape("; ".join(d["faults"])) + (" approximate" if d["approximate"] else ""),
        ]
        for k, d in s["devices"].items()
    ]
    head = [
        "device",
        "model",
        "method",
        "how",
        "energy J",
        "Wh",
        "avg W",
        "peak W",
        "CO2e g",
        "market g",
        "embodied g",
        "notes",
    ]
    return _table(head, rows, left=4)


def _window_table(s: Mapping[str, Any]) -> str:
    if not s["windows"]:
        return "<p class=meta>The command opened no windows of its own (meter.measure).</p>"
    rows = [
        [
            html.escape(n),
            " ".join(_method_cell(m) for m in w["methods"]),
            str(w["count"]),
            _fmt(w["energy_j"], 1),
            _fmt(_wh(w["energy_j"]), 3),
            _fmt(w["mean_energy_j"], 1),
            _fmt(w["mean_duration_s"], 2),
            _fmt(w["co2e_g"], 3),
            str(w["approximate"]),
        ]
        for n, w in s["windows"].items()
    ]
    head = [
        "window",
        "methods",
        "count",
        "energy J",
        "Wh",
        "mean J per window",
        "mean s per window",
        "CO2e g",
        "approximate",
    ]
    return _table(head, rows, left=2)


def _carbon_table(s: Mapping[str, Any]) -> str:
    c = s["carbon"]
    rows = [
        ["CO2e location-based, g", _fmt(s["co2e_g"], 3)],
        ["CO2e market-based, g", _fmt(s["co2e_market_g"], 3)],
        ["CO2e embodied, g", _fmt(s["embodied_co2e_g"], 3)],
        ["zone", f"{_fmt(c['zone'])} ({_fmt(c['zone_from'])})"],
        ["provider", _fmt(c["provider"])],
        ["mean intensity, g/kWh", _fmt(c["intensity_g_per_kwh"], 1)],
        ["PUE", _fmt(c["pue"])],
        ["market basis", _fmt(c["market_basis"])],
        ["fallbacks", html.escape("; ".join(map(str, c["fallbacks"]))) or "none"],
    ]
    rows += [
        [
            f"what-if {_fmt(z.get('zone'))} {_fmt(z.get('name'))}",
            f"{_fmt(z.get('co2e_g'), 3)} g at {_fmt(z.get('g_per_kwh'), 0)} g/kWh "
            f"({_fmt(z.get('source'))})",
        ]
        for z in s["compare_zones"]
    ]
    return _table(["", ""], rows, left=2)


def _runs_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(s["index"]),
            html.escape(s["name"]),
            _when(s["start_time"]),
            " ".join(_method_cell(m) for m in s["methods"]),
            _fmt(s["duration_s"], 1),
            _fmt(_wh(s["energy_j"]), 3),
            _fmt(s["co2e_g"], 3),
            _fmt(s["co2e_market_g"], 3),
            _fmt(s["embodied_co2e_g"], 3),
            _fmt(s["exit_code"]),
            "; ".join(
                f"{html.escape(n)} {_fmt(_wh(w['mean_energy_j']), 4)}"
                for n, w in s["windows"].items()
            ),
        ]
        for s in summaries
    ]
    head = [
        "run",
        "name",
        "start",
        "methods",
        "duration s",
        "energy Wh",
        "CO2e g",
        "market g",
        "embodied g",
        "exit",
        "mean Wh per window",
    ]
    return _table(head, rows, left=4)


# -- the page ----------------------------------------------------------------------------------


def _figure_html(fig: Any) -> str:
    if fig is None:
        return ""
    out: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="chart">{out}</div>'


def _run_section(run: Run, s: Mapping[str, Any]) -> str:
    c = s["carbon"]
    parts = [f"<h2>Run {s['index']}: {html.escape(s['name'])}"]
    if s["estimate"]:
        parts.append(' <span class="badge">contains estimated or simulated figures</span>')
    parts.append("</h2>")
    parts.append(
        "<p class=meta>"
        f"command <code>{html.escape(' '.join(map(str, s['command'])))}</code> · "
        f"exit code {_fmt(s['exit_code'])} · host {_fmt(s['host'])} · "
        f"{_when(s['start_time'])} · {_fmt(s['duration_s'], 1)} s · "
        f"{_fmt(_wh(s['energy_j']), 3)} Wh · zone {_fmt(c['zone'])} · "
        f"provider {_fmt(c['provider'])} · PUE {_fmt(c['pue'])} · "
        f"meter {_fmt(s['meter_version'])} · run id {_fmt(s['run_id'])}"
        + (f" · <span class=est>error: {html.escape(str(s['error']))}</span>" if s["error"] else "")
        + "</p>"
    )
    if run.timeline is not None:
        parts.append(_figure_html(timeline_figure(run)))
    else:
        parts.append(
            "<p class=meta>This record has no power timeline (written by an older meter): "
            "totals only.</p>"
        )
    parts.append('<div class="grid">')
    parts.append(_figure_html(device_energy_figure(s)))
    parts.append(_figure_html(window_energy_figure(s)) or _figure_html(carbon_figure(s)))
    if s["windows"]:
        parts.append(_figure_html(carbon_figure(s)))
    parts.append("</div>")
    parts.append("<h3>Devices</h3>" + _device_table(s))
    parts.append("<h3>Windows</h3>" + _window_table(s))
    parts.append("<h3>Carbon</h3>" + _carbon_table(s))
    return "".join(parts)


def render(runs: Sequence[Run], *, title: str = "meter report", source: str = "") -> str:
    """The whole page for ``runs``: trend charts when there are several, then each run in detail
    (the last `MAX_DETAILED_RUNS`), with the numbers in tables under the charts."""
    _plotly()
    import plotly.offline

    summary = summarise(runs)
    summaries = summary["runs"]
    body = [f"<h1>{html.escape(title)}</h1>"]
    versions = sorted({str(s["meter_version"]) for s in summaries if s["meter_version"]})
    body.append(
        f"<p class=meta>{html.escape(source)} · {len(summaries)} run(s) · meter "
        f"{html.escape(', '.join(versions) or '?')} · plotly {html.escape(_ver())}"
        " · methods: <b>counter</b> and <b>sampled</b> are measurements; "
        '<span class="est">estimated</span> and <span class="est">simulated</span> are not.</p>'
    )
    body.append('<pre id="meter-js-errors"></pre>')
    if len(runs) > 1:
        body.append("<h2>Across runs</h2>")
        body.append(_figure_html(trend_figure(summary["series"])))
        body.append(_figure_html(window_trend_figure(summary["series"])))
        body.append(_runs_table(summaries))
    detailed = list(zip(runs, summaries, strict=True))[-MAX_DETAILED_RUNS:]
    if len(runs) > len(detailed):
        body.append(
            f"<p class=meta>Details of the last {len(detailed)} runs of {len(runs)}; "
            "choose another with --run NAME|INDEX.</p>"
        )
    for run, s in reversed(detailed):
        body.append(_run_section(run, s))
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>{_ERROR_TRAP}"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def _ver() -> str:
    import plotly

    return str(plotly.__version__)

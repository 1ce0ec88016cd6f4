"""The shipped Grafana dashboard: importable, consistent, and every query valid PromQL.

The PromQL check sends each expression to a real Prometheus (Debian's ``prometheus``, started
on 127.0.0.1 with no scrape target) and skips, with the reason, when it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meter.exporters.grafana import (
    dashboard,
    dashboard_json,
    promql_expressions,
    substitute_variables,
    uses_request_metrics,
)

from tests.exporters.promservers import http_get, run_prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "exporters" / "grafana" / "meter-dashboard.json"
DS_UID = "${DS_PROMETHEUS}"

#: The metric names the exporter implements (the contract); nothing else may be queried.
CONTRACT_METRICS = {
    "meter_energy_joules_total",
    "meter_power_watts",
    "meter_co2e_grams_total",
    "meter_grid_carbon_intensity_grams_per_kwh",
    "meter_window_energy_joules_total",
    "meter_window_co2e_grams_total",
    "meter_window_seconds_total",
    "meter_windows_total",
    "meter_idle_power_watts",
    "meter_info",
    "meter_device_read_errors_total",
    # from the ASGI middleware
    "meter_request_energy_joules_bucket",
    "meter_request_energy_joules_sum",
    "meter_request_energy_joules_count",
    "meter_request_co2e_grams_total",
    "meter_requests_total",
    "meter_output_tokens_total",
}
#: Names that may appear in descriptions: the histogram's family name.
FAMILY_NAMES = {"meter_request_energy_joules"}
#: The contract's labels, Prometheus' target labels, a histogram's ``le``, and the grouping
#: key's ``rank`` of a Pushgateway.
CONTRACT_LABELS = {
    "device",
    "kind",
    "model",
    "uuid",
    "method",
    "accounting",
    "zone",
    "source",
    "window",
    "version",
    "route",
    "status",
    "instance",
    "job",
    "le",
    "rank",
}
METRIC_NAME = re.compile(r"\bmeter_[a-z0-9_]+")
# by (...), without (...), on (...), ignoring (...), group_left (...), group_right (...)
LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
RANGE = re.compile(r"\[([^\]]*)\]")


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels") or [])


def walk(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a JSON document."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key, value
            yield from walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from walk(value)


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return dashboard()


def panels_of(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in walk_panels(dash["panels"]) if p["type"] != "row"]


def targets_of(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in panels_of(dash) for t in p.get("targets", [])]


# -- the file --------------------------------------------------------------------------------


def test_shipped_file_is_valid_json_and_what_the_module_reads() -> None:
    text = DASHBOARD_PATH.read_text(encoding="utf-8")
    assert dashboard_json() == text
    assert dashboard() == json.loads(text)
    assert text.endswith("\n")


def test_import_metadata(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "meter-energy"
    assert dash["title"] == "meter: energy and carbon"
    assert dash["schemaVersion"] in (38, 39)
    assert dash["id"] is None  # Grafana assigns its own on import
    # Import asks for the Prometheus datasource: one input, DS_PROMETHEUS.
    (ds_input,) = dash["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS"
    assert ds_input["type"] == "datasource"
    assert ds_input["pluginId"] == "prometheus"
    requires = {(r["type"], r["id"]): r for r in dash["__requires"]}
    assert int(requires[("grafana", "grafana")]["version"].split(".")[0]) >= 10
    assert ("datasource", "prometheus") in requires
    used_types = {p["type"] for p in panels_of(dash)}
    assert used_types <= {"timeseries", "stat", "bargauge", "table"}
    assert {t for kind, t in requires if kind == "panel"} == used_types


def test_every_query_uses_the_datasource_input(dash: dict[str, Any]) -> None:
    for panel in panels_of(dash):
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DS_UID}, panel["title"]
    for var in dash["templating"]["list"]:
        assert var["datasource"] == {"type": "prometheus", "uid": DS_UID}, var["name"]
    # No hard-wired datasource anywhere else (the built-in annotation is Grafana's own).
    for key, value in walk(dash):
        if key == "datasource" and isinstance(value, dict) and value.get("type") != "grafana":
            assert value["uid"] == DS_UID


def test_panels_have_unique_ids_titles_descriptions_and_fit_the_grid(
    dash: dict[str, Any],
) -> None:
    every = list(walk_panels(dash["panels"]))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels_of(dash):
        assert panel["title"]
        assert len(panel.get("description", "")) > 40, f"{panel['title']}: say how it's made"
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_variables(dash: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"instance", "device"}
    expected = {
        "instance": "label_values(meter_info, instance)",
        "device": 'label_values(meter_energy_joules_total{instance=~"$instance"}, device)',
    }
    for name, query in expected.items():
        var = variables[name]
        assert var["type"] == "query"
        assert var["definition"] == query
        assert var["query"]["query"] == query
        assert var["multi"] is True
        assert var["includeAll"] is True


def test_required_panels_are_there(dash: dict[str, Any]) -> None:
    exprs = [t["expr"] for t in targets_of(dash)]

    def has(*parts: str) -> bool:
        return any(all(p in e for p in parts) for e in exprs)

    assert has("meter_power_watts{")
    assert has("sum(meter_power_watts")
    assert has("increase(meter_energy_joules_total", "[$__range]")
    assert has("increase(meter_energy_joules_total", "/ 3.6e6")  # kWh
    assert has("sum by (accounting)", "increase(meter_co2e_grams_total", "[$__range]")
    assert has("rate(meter_co2e_grams_total", "[$__rate_interval]")
    assert has("meter_grid_carbon_intensity_grams_per_kwh")
    assert has("meter_power_watts", "- ignoring", "meter_idle_power_watts")
    assert has("topk(", "increase(meter_window_energy_joules_total", "[$__range]")
    assert has("meter_window_energy_joules_total", "/", "meter_windows_total")
    assert has("histogram_quantile(0.5,", "meter_request_energy_joules_bucket")
    assert has("histogram_quantile(0.95,", "meter_request_energy_joules_bucket")
    assert has(
        "increase(meter_request_energy_joules_sum", "increase(meter_request_energy_joules_count"
    )
    assert has("meter_request_energy_joules_sum", "/", "meter_output_tokens_total")
    assert has("meter_device_read_errors_total")
    assert has("count by (method")


def test_ranges_use_grafana_variables(dash: dict[str, Any]) -> None:
    """Rates over $__rate_interval, totals over $__range: nothing hard-wired."""
    for target in targets_of(dash):
        for window in RANGE.findall(target["expr"]):
            assert window in ("$__rate_interval", "$__range"), target["expr"]
        if "rate(" in target["expr"]:
            assert "$__rate_interval" in target["expr"], target["expr"]


def test_every_metric_is_a_contract_name(dash: dict[str, Any]) -> None:
    queried: set[str] = set()
    for target in targets_of(dash):
        queried |= set(METRIC_NAME.findall(target["expr"]))
    for var in dash["templating"]["list"]:
        queried |= set(METRIC_NAME.findall(var["definition"]))
    assert queried <= CONTRACT_METRICS, sorted(queried - CONTRACT_METRICS)
    # Every contract metric has a panel (the request ones stay empty until they exist).
    assert queried == CONTRACT_METRICS, sorted(CONTRACT_METRICS - queried)
    # Descriptions name contract metrics only, too.
    mentioned = set(METRIC_NAME.findall(dashboard_json()))
    assert mentioned <= CONTRACT_METRICS | FAMILY_NAMES, sorted(
        mentioned - CONTRACT_METRICS - FAMILY_NAMES
    )


def test_every_label_is_a_contract_label(dash: dict[str, Any]) -> None:
    used: set[str] = set()
    for target in targets_of(dash):
        expr = target["expr"]
        for group in LABEL_LIST.findall(expr):
            used |= {x.strip() for x in group.split(",") if x.strip()}
        used |= set(MATCHER.findall(expr))
        used |= set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
    assert used, "the label regexes found nothing"
    assert used <= CONTRACT_LABELS, sorted(used - CONTRACT_LABELS)


# -- meter.exporters.grafana -----------------------------------------------------------------------


def test_promql_expressions_substitutes_every_variable() -> None:
    exprs = promql_expressions()
    assert len(exprs) == len(targets_of(dashboard()))
    for expr in exprs:
        assert "$" not in expr, expr
    assert 'meter_power_watts{instance=~".*", device=~".*"}' in exprs


def test_promql_expressions_walks_collapsed_rows() -> None:
    target = {"expr": 'rate(x{instance=~"${instance}"}[$__rate_interval])', "refId": "A"}
    nested = {
        "panels": [
            {"type": "row", "collapsed": True, "panels": [{"type": "stat", "targets": [target]}]},
            {"type": "row", "collapsed": False, "panels": []},
            {"type": "timeseries", "targets": [{"expr": "up", "refId": "A"}, {"refId": "B"}]},
        ]
    }
    assert promql_expressions(nested) == ['rate(x{instance=~".*"}[1m])', "up"]


def test_substitute_variables() -> None:
    assert substitute_variables("x[$__range] offset $__interval") == "x[5m] offset 15s"
    assert substitute_variables("$__range_s / ${__range_ms}") == "300 / 300000"
    assert substitute_variables('x{device=~"${device:regex}"}') == 'x{device=~".*"}'
    with pytest.raises(KeyError, match=r"\$gpu"):
        substitute_variables('x{device="$gpu"}')


def test_request_expressions_are_told_apart() -> None:
    every = promql_expressions()
    requests = promql_expressions(request_metrics=True)
    others = promql_expressions(request_metrics=False)
    assert requests and others
    assert sorted(requests + others) == sorted(every)
    assert all(uses_request_metrics(e) for e in requests)
    assert not any("meter_request" in e or "meter_output_tokens" in e for e in others)
    assert uses_request_metrics("rate(meter_requests_total[1m])")
    assert not uses_request_metrics("meter_power_watts")


# -- PromQL, checked by Prometheus itself ----------------------------------------------------


def _query_status(url: str, expr: str) -> tuple[str, str]:
    status, body = http_get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    data = json.loads(body)
    return data.get("status", f"HTTP {status}"), data.get("errorType", "") + " " + data.get(
        "error", ""
    )


def test_every_expression_parses_in_prometheus() -> None:
    """Each substituted expression, and each variable's selector, as an instant query against a
    real Prometheus 2.42: a parse error is HTTP 400 ``bad_data``."""
    with run_prometheus([]) as prom:
        # The check can fail: a broken expression is refused.
        status, error = _query_status(prom.url, "sum by (device (meter_power_watts)")
        assert status == "error" and "bad_data" in error, error
        exprs = promql_expressions()
        for var in dashboard()["templating"]["list"]:
            # label_values(SELECTOR, label) is Grafana's; its selector is PromQL.
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["definition"])
            assert selector, var["definition"]
            exprs.append(substitute_variables(selector.group(1)))
        failures = []
        for expr in exprs:
            status, error = _query_status(prom.url, expr)
            if status != "success":
                failures.append(f"{expr}\n    -> {error}")
        assert not failures, "\n".join(failures)


# -- the CLI ---------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_meter_dashboard_prints_the_shipped_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meter", "dashboard"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    assert out.stdout == DASHBOARD_PATH.read_text(encoding="utf-8")
    assert json.loads(out.stdout)["uid"] == "meter-energy"


def test_meter_dashboard_output_file(tmp_path: Path) -> None:
    path = tmp_path / "meter.json"
    out = subprocess.run(
        [sys.executable, "-m", "meter", "dashboard", "--output", str(path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    )
    assert out.stdout == ""
    assert path.read_text(encoding="utf-8") == DASHBOARD_PATH.read_text(encoding="utf-8")
    assert str(path) in out.stderr

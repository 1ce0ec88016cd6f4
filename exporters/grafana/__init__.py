"""The shipped Grafana dashboard for ``meter``'s Prometheus metrics.

``meter-dashboard.json`` is an import file for Grafana 10 and newer: Grafana asks for the
Prometheus datasource (the ``DS_PROMETHEUS`` input) when it is imported. ``meter dashboard``
prints it.

>>> from meter.exporters.grafana import dashboard, promql_expressions
>>> dashboard()["uid"]
'meter-energy'
>>> any("meter_power_watts" in e for e in promql_expressions())
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

__all__ = [
    "DASHBOARD_FILE",
    "REQUEST_METRIC_PREFIXES",
    "VARIABLE_VALUES",
    "dashboard",
    "dashboard_json",
    "promql_expressions",
    "substitute_variables",
    "uses_request_metrics",
]

#: The dashboard's file name inside this package.
DASHBOARD_FILE = "meter-dashboard.json"

#: What each Grafana variable becomes when an expression is sent to a plain Prometheus: every
#: instance and device, and typical values of Grafana's interval variables.
VARIABLE_VALUES: dict[str, str] = {
    "instance": ".*",
    "device": ".*",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
}

#: Metrics that only the ASGI middleware produces: panels using them stay empty until a
#: metered server is scraped.
REQUEST_METRIC_PREFIXES = ("meter_request_", "meter_requests_", "meter_output_tokens")

# ${name}, ${name:format} and $name (the longest name wins: $__range_s is not $__range + "_s").
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")
_REQUEST_METRIC = re.compile(r"\b(?:" + "|".join(REQUEST_METRIC_PREFIXES) + r")\w*")


def dashboard_json() -> str:
    """The dashboard file's text, exactly as shipped."""
    return resources.files(__name__).joinpath(DASHBOARD_FILE).read_text(encoding="utf-8")


def dashboard() -> dict[str, Any]:
    """The dashboard, parsed."""
    parsed: dict[str, Any] = json.loads(dashboard_json())
    return parsed


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included, in order."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def substitute_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """``expr`` with its Grafana variables replaced by `VARIABLE_VALUES` (or ``values``).

    >>> substitute_variables('rate(x{instance=~"$instance"}[$__rate_interval])')
    'rate(x{instance=~".*"}[1m])'

    An unknown variable raises ``KeyError``: a new dashboard variable needs a value here.
    """
    table = VARIABLE_VALUES if values is None else values

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in table:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return table[name]

    return _VARIABLE.sub(replace, expr)


def uses_request_metrics(expr: str) -> bool:
    """Whether ``expr`` reads a metric of the ASGI middleware (`REQUEST_METRIC_PREFIXES`)."""
    return _REQUEST_METRIC.search(expr) is not None


def promql_expressions(
    dash: dict[str, Any] | None = None, *, request_metrics: bool | None = None
) -> list[str]:
    """Every panel query's PromQL, variables substituted, ready for a plain Prometheus.

    Walks all panels, those inside (collapsed) rows included. ``request_metrics=None`` gives
    every expression; ``False`` only those that need no request metric (they return data from
    any scraped ``meter``); ``True`` only those that do (empty until the ASGI middleware
    is scraped).

    >>> exprs = promql_expressions()
    >>> len(exprs) == len(promql_expressions(request_metrics=False)) + len(
    ...     promql_expressions(request_metrics=True))
    True
    """
    dash = dashboard() if dash is None else dash
    out: list[str] = []
    for panel in _panels(dash.get("panels") or []):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr:
                continue
            if request_metrics is not None and uses_request_metrics(expr) != request_metrics:
                continue
            out.append(substitute_variables(expr))
    return out

"""The README's metric tables against the exporters: every metric the collector declares
(`meter.exporters.prometheus.METRICS`) is in the table of "### Metrics", with its type and
labels, and nothing else is; likewise the ASGI middleware's request metrics in the table of
its section and in the list under "### Metrics"."""

from __future__ import annotations

import re
from pathlib import Path

from meter.exporters.prometheus import METRICS
from meter.integrations.asgi import RequestMetrics
from prometheus_client import CollectorRegistry

README = Path(__file__).resolve().parents[2] / "README.md"


def table(heading: str, header: str) -> list[list[str]]:
    """The rows of the first table headed ``header`` in the README section ``heading`` (up to
    the next heading of its level or above; a ``#`` line in a code block is no heading)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    level = len(heading.split()[0])
    fenced = False
    for i in range(start + 1, len(lines)):
        line = lines[i]
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            raise AssertionError(f"no table headed {header!r} under {heading!r}")
        if not fenced and line.startswith(header):
            break
    else:
        raise AssertionError(f"no table headed {header!r} under {heading!r}")
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def request_metrics() -> dict[str, str]:
    """The sample names of the middleware's metrics (counters with ``_total``) -> type."""
    registry = CollectorRegistry(auto_describe=False)
    RequestMetrics.shared(registry)
    out = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def test_the_metrics_table_is_what_the_collector_declares() -> None:
    rows = table("### Metrics", "| metric | type | unit | labels | what |")
    documented = {row[0].strip("`"): row for row in rows}
    assert len(documented) == len(rows), "a metric listed twice"
    assert set(documented) == set(METRICS), (
        f"missing from the README: {sorted(set(METRICS) - set(documented))}; "
        f"not exported: {sorted(set(documented) - set(METRICS))}"
    )
    for name, (kind, labels) in METRICS.items():
        _, doc_type, _, doc_labels, what = documented[name]
        # An info metric is exposed as a gauge whose value is 1.
        assert doc_type.split()[0] == ("gauge" if kind == "info" else kind), name
        assert names(doc_labels) == set(labels), name
        assert what, name


def test_the_request_metrics_table_is_what_the_middleware_exports() -> None:
    exported = request_metrics()
    rows = table("## Inference servers: the ASGI middleware", "| metric | type | what |")
    documented = {row[0].strip("`"): row[1] for row in rows}
    assert documented == exported


def test_the_metrics_section_lists_the_request_metrics() -> None:
    section = README.read_text(encoding="utf-8").split("### Metrics\n", 1)[1]
    section = section.split("\n### ", 1)[0]
    listed = re.search(r"middleware adds these metrics.*?\n\n(.*?)\n\n", section, re.DOTALL)
    assert listed is not None
    bullets = {m.group(1) for m in re.finditer(r"^- `(meter_\w+)`", listed.group(1), re.M)}
    assert bullets == set(request_metrics())
    assert not set(METRICS) & bullets

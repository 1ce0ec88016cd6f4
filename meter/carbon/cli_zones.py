"""``meter zones [QUERY] [--json]``: list the zones of the embedded table.

A query matches keys and names (case- and accent-insensitive), anything `normalise_zone`
accepts (``DEU``, ``aws:us-east-1``), and cloud region aliases, which are listed with the zone
they map to.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from meter.carbon.table import Table, ZoneRecord, fold, load_table
from meter.carbon.zones import CLOUD_REGIONS, normalise_zone
from meter.errors import ConfigError

__all__ = ["zones_command"]

_NAME_WIDTH = 48
_SOURCE_ORDER = ("electricitymaps", "ember", "egrid", "gcp")


def _matches(query: str | None, table: Table) -> tuple[list[ZoneRecord], dict[str, str]]:
    """Matching records (key order) and cloud aliases (alias -> key)."""
    if query is None or not query.strip():
        return list(table), {}
    records = {r.key: r for r in table.search(query.strip())}
    try:
        key = normalise_zone(query, table)
    except ConfigError:
        pass
    else:
        record = table.get(key)
        if record is not None:
            records[key] = record
    q = fold(query)
    aliases = {a: k for a, k in CLOUD_REGIONS.items() if q in a and a != k}
    return sorted(records.values(), key=lambda r: r.key), aliases


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_table(records: list[ZoneRecord], aliases: dict[str, str], table: Table) -> None:
    rows = [
        (
            r.key,
            _short(r.name, _NAME_WIDTH),
            f"{r.g_per_kwh:.1f}",
            str(r.year),
            r.source,
            "" if r.cfe_share is None else f"{r.cfe_share:.0%}",
        )
        for r in records
    ]
    if rows:
        header = ("ZONE", "NAME", "G/KWH", "YEAR", "SOURCE", "CFE")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        right = {2, 3, 5}  # numbers right-aligned
        for row in [header, *rows]:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            print("  ".join(cells).rstrip())
    if aliases:
        if rows:
            print()
        aw = max(len(a) for a in aliases)
        kw = max(len(k) for k in aliases.values())
        print("Cloud regions:")
        for alias, key in sorted(aliases.items()):
            record = table.get(key)
            what = "" if record is None else f"  {record.name}, {record.g_per_kwh:.1f} g/kWh"
            print(f"  {alias.ljust(aw)} -> {key.ljust(kw)}{what}".rstrip())
    counts = [_plural(len(rows), "zone")] + (
        [_plural(len(aliases), "cloud region")] if aliases else []
    )
    order = [s for s in _SOURCE_ORDER if s in table.sources] + sorted(
        set(table.sources) - set(_SOURCE_ORDER)
    )
    credits = ", ".join(
        f"{table.sources[s].get('name', s)} ({table.sources[s].get('licence', '?')})" for s in order
    )
    print(f"\n{', '.join(counts)}. Data: {credits}; see meter/carbon/data/ATTRIBUTION.md")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def zones_command(query: str | None, *, as_json: bool) -> int:
    """List the zones matching ``query`` (all when None) with their intensity, year, source
    and Google CFE share, sorted by key, plus matching cloud region aliases. Returns the exit
    status: 0, or 1 when nothing matches (with close matches on stderr).

    >>> zones_command("aws:eu-west-3", as_json=False)  # doctest: +SKIP
    """
    table = load_table()
    records, aliases = _matches(query, table)
    if as_json:
        out: dict[str, Any] = {
            "zones": [{"key": r.key, **r.to_dict()} for r in records],
            "aliases": dict(sorted(aliases.items())),
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif records or aliases:
        _print_table(records, aliases, table)
    if records or aliases:
        return 0
    message = f"meter: no zone matches {query!r}"
    try:
        normalise_zone(query or "", table)
    except ConfigError as e:
        if "did you mean" in str(e) or "splits into" in str(e):
            message = f"meter: {e}"
    print(message, file=sys.stderr)
    return 1

"""``meter zones [QUERY] [--json]``: search the zones of the embedded table and the cloud regions.

`meter.carbon.zones.search_zones` ranks what the query most likely means first: an exact key,
ISO code, alias, cloud region or name, then the sub-zones and cloud regions in it, then words
and substrings of keys and names (case- and accent-insensitive). A cloud region that maps to a
zone (AWS, Azure) is listed with that zone's figures.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from meter.carbon.table import Table, ZoneRecord, load_table
from meter.carbon.zones import ZoneMatch, close_zones, search_zones

__all__ = ["zones_command"]

_NAME_WIDTH = 48
_SOURCE_ORDER = ("electricitymaps", "ember", "egrid", "gcp")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(match: ZoneMatch, record: ZoneRecord) -> tuple[str, ...]:
    name = record.name if match.key == record.key else f"-> {record.key} ({record.name})"
    return (
        match.key,
        _short(name, _NAME_WIDTH),
        f"{record.g_per_kwh:.1f}",
        str(record.year),
        record.source,
        "" if record.cfe_share is None else f"{record.cfe_share:.0%}",
    )


def _print_table(matches: list[ZoneMatch], table: Table) -> None:
    rows = [_row(m, r) for m in matches if (r := table.get(m.zone)) is not None]
    header = ("ZONE", "NAME", "G/KWH", "YEAR", "SOURCE", "CFE")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 5}  # numbers right-aligned
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    clouds = sum(m.cloud for m in matches)
    counts = [
        _plural(n, word)
        for n, word in ((len(matches) - clouds, "zone"), (clouds, "cloud region"))
        if n
    ]
    order = [s for s in _SOURCE_ORDER if s in table.sources] + sorted(
        set(table.sources) - set(_SOURCE_ORDER)
    )
    credits = ", ".join(
        f"{table.sources[s].get('name', s)} ({table.sources[s].get('licence', '?')})" for s in order
    )
    lines += ["", f"{', '.join(counts)}. Data: {credits}; see meter/carbon/data/ATTRIBUTION.md"]
    # One write: `meter zones DE | head -3` then ends quietly (the pipe takes it whole), where
    # a write per row, unbuffered, would meet the closed pipe.
    print("\n".join(lines))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def zones_command(query: str | None, *, as_json: bool) -> int:
    """List the zones and cloud regions matching ``query`` (every zone when None), best match
    first (`search_zones`), with intensity, year, source and Google CFE share. Returns the exit
    status: 0, or 1 when nothing matches (saying so on stderr, with close matches).

    JSON: ``matches`` (ranked: ``key``, ``zone``, ``match``), ``zones`` (the record of every
    zone the matches name, in order of first mention) and ``aliases`` (cloud region -> zone,
    for those that map to another zone).

    >>> zones_command("aws:eu-west-3", as_json=False)  # doctest: +SKIP
    """
    table = load_table()
    matches = search_zones(query, table)
    if as_json:
        zones = {m.zone: table.get(m.zone) for m in matches}
        out: dict[str, Any] = {
            "matches": [{"key": m.key, "zone": m.zone, "match": m.match} for m in matches],
            "zones": [{"key": k, **r.to_dict()} for k, r in zones.items() if r is not None],
            "aliases": {m.key: m.zone for m in matches if m.key != m.zone},
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif matches:
        _print_table(matches, table)
    if matches:
        return 0
    close = close_zones(query or "", table)
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    print(
        f"meter: no zone matches {query!r}{hint} `meter zones` with no query lists them all.",
        file=sys.stderr,
    )
    return 1

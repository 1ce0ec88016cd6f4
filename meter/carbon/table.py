"""The embedded carbon-intensity table: one yearly average per grid zone, offline.

Built by ``scripts/build_carbon_table.py`` from public data (Electricity Maps, Ember, US EPA
eGRID, Google Cloud; see ``meter/carbon/data/ATTRIBUTION.md`` for sources and licences) and
shipped as package data. It is read on the first `load_table` call, never at import.

>>> from meter.carbon.table import load_table
>>> table = load_table()
>>> table.get("DE").source
'electricitymaps'
>>> [r.key for r in table.search("california iso")]
['US-CAL-CISO']
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any

from meter.errors import MeterError

__all__ = ["WORLD_KEY", "Table", "ZoneRecord", "load_table"]

#: The last-resort zone: Ember's world average intensity of electricity generation.
WORLD_KEY = "EMBER:World"

_DATA_PACKAGE = "meter.carbon.data"
_DATA_FILE = "intensity.json"
_FORMAT = 1


@dataclass(frozen=True)
class ZoneRecord:
    """One zone of the table.

    ``g_per_kwh``: yearly average grid intensity (gCO2e/kWh; CO2 only for eGRID, see ``note``).
    ``source``: ``electricitymaps``, ``ember``, ``egrid`` or ``gcp``. Shares are 0..1:
    ``renewable_share`` and ``carbon_free_share`` of the grid mix (Electricity Maps),
    ``cfe_share`` Google's hourly carbon-free energy share including its contracts (GCP).
    ``country``: ISO 3166 alpha-2 where known, ``iso3`` the alpha-3 code of a national zone.
    ``grid_zone``: for a ``gcp:<region>`` record, the Electricity Maps zone of that region.
    """

    key: str
    name: str
    g_per_kwh: float
    year: int
    source: str
    renewable_share: float | None = None
    carbon_free_share: float | None = None
    cfe_share: float | None = None
    country: str | None = None
    grid_zone: str | None = None
    note: str | None = None
    iso3: str | None = None

    @classmethod
    def from_dict(cls, key: str, data: Mapping[str, Any]) -> ZoneRecord:
        """A record from its JSON form (fields it does not know are ignored)."""
        known = {f.name for f in fields(cls)} - {"key"}
        return cls(key=key, **{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict, without the fields that are None."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a key or name (``Tōkyō`` -> ``tokyo``)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


class Table:
    """The zones, by key. ``key in table`` tests a key (exact); iterating yields the
    records in key order.

    >>> t = Table([ZoneRecord("XX", "Example", 100.0, 2025, "electricitymaps")])
    >>> t.get("XX").g_per_kwh, "XX" in t, len(t)
    (100.0, True, 1)
    """

    def __init__(
        self,
        records: Iterable[ZoneRecord],
        *,
        iso3: Mapping[str, str] | None = None,
        sources: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._records = {r.key: r for r in sorted(records, key=lambda r: r.key)}
        self._folded = {fold(k): k for k in self._records}
        self.iso3: Mapping[str, str] = dict(iso3 or {})
        """ISO 3166 alpha-3 -> alpha-2 country codes."""
        self.sources: Mapping[str, Mapping[str, Any]] = dict(sources or {})
        """Per source id: name, licence, url, years, unit."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Table:
        """A table from the parsed ``intensity.json`` object."""
        meta = data.get("meta", {})
        if meta.get("format") != _FORMAT:
            raise MeterError(
                f"carbon table format {meta.get('format')!r} is not {_FORMAT}: rebuild it with "
                "`python scripts/build_carbon_table.py` or reinstall meter"
            )
        records = (ZoneRecord.from_dict(k, v) for k, v in data["zones"].items())
        return cls(records, iso3=data.get("iso3"), sources=meta.get("sources"))

    def get(self, key: str) -> ZoneRecord | None:
        """The record of zone ``key`` (exact key), or None."""
        return self._records.get(key)

    def match_key(self, text: str) -> str | None:
        """The key equal to ``text`` ignoring case and accents (``us-cal-ciso`` ->
        ``US-CAL-CISO``), or None."""
        return self._folded.get(fold(text))

    def keys(self) -> list[str]:
        """All keys, sorted."""
        return list(self._records)

    def search(self, query: str) -> list[ZoneRecord]:
        """Records whose key or name contains ``query``, ignoring case and accents, in key
        order. An empty query matches everything.

        >>> t = Table([ZoneRecord("JP-TK", "Tōkyō, Japan", 535.0, 2025, "electricitymaps")])
        >>> [r.key for r in t.search("tokyo")], [r.key for r in t.search("jp-")]
        (['JP-TK'], ['JP-TK'])
        """
        q = fold(query)
        return [r for r in self._records.values() if q in fold(r.key) or q in fold(r.name)]

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __iter__(self) -> Iterator[ZoneRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<Table of {len(self)} zones>"


@functools.lru_cache(maxsize=1)
def load_table() -> Table:
    """The embedded table, read from package data on the first call and cached.

    >>> load_table().get("EMBER:World").source
    'ember'
    """
    text = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    return Table.from_json(json.loads(text))

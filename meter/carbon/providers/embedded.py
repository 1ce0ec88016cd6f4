"""`EmbeddedProvider`: yearly averages from the table shipped with meter (offline; the default).

It imports neither ``requests`` nor anything that opens a socket.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from meter.carbon.providers.base import Intensity, ProviderError, _check_at, _check_zone
from meter.errors import ConfigError

__all__ = ["EmbeddedProvider"]


class EmbeddedProvider:
    """Yearly average intensities from the table shipped with meter (offline, the default).

    ``table``: anything with ``get(key) -> record | None`` whose records have ``key``,
    ``g_per_kwh``, ``year`` and ``source``; by default `meter.carbon.table.load_table()`,
    loaded on first use. ``source`` reads ``embedded:<record source>-<year>``.
    """

    name = "embedded"
    live = False

    def __init__(self, table: Any = None) -> None:
        if table is not None and not callable(getattr(table, "get", None)):
            raise ConfigError(
                f"table={table!r} has no get(key) method; pass a meter.carbon.table.Table",
                setting="table",
            )
        self._table = table
        self._lock = threading.Lock()

    @property
    def table(self) -> Any:
        with self._lock:
            if self._table is None:
                from meter.carbon.table import load_table

                self._table = load_table()
            return self._table

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        key = _check_zone(zone)
        when = _check_at(at)
        record = self.table.get(key)
        if record is None:
            raise ProviderError(
                f"zone {key!r} is not in the embedded table (see `meter zones` for the keys)",
                provider=self.name,
                kind="zone",
            )
        return Intensity(
            g_per_kwh=float(record.g_per_kwh),
            zone=str(getattr(record, "key", key)),
            source=f"embedded:{record.source}-{record.year}",
            at=time.time() if when is None else when,
        )

    def __repr__(self) -> str:
        return "EmbeddedProvider()" if self._table is None else f"EmbeddedProvider({self._table!r})"

"""Append-only JSON Lines log of measurements that survives crashes.

Each record is serialised in full first, then written with a single ``write(2)`` on a file
opened with ``O_APPEND`` and flushed to disk (``fsync``), so a crash of the writer leaves every
earlier record intact and never half a record followed by more data. If an earlier crash (a
power cut mid-write) left a torn last line, the next record starts on a fresh line, and
`read_jsonl` skips the torn line with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("meter")


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null rather than produce invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlWriter:
    """Append records to a JSONL file. Usable as a `Meter` sink (called with a Measurement).

    >>> w = JsonlWriter("runs.jsonl")        # doctest: +SKIP
    >>> w.write({"name": "run", "energy_j": 12.5})  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        parent = self.path.parent
        if not parent.exists():
            raise FileNotFoundError(
                f"cannot write {self.path}: folder {parent} does not exist; create it first "
                f"(mkdir -p {parent}) or choose another --output path"
            )

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(_clean(record), separators=(",", ":"), sort_keys=False) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if self._torn_tail(fd):
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def __call__(self, measurement: Any) -> None:
        self.write(measurement.to_dict())

    @staticmethod
    def _torn_tail(fd: int) -> bool:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        return os.pread(fd, 1, size - 1) != b"\n"


#: Window records written per window name under ``meter run --output``: a window per training
#: step would otherwise add a line per step (about 1 KB each) for the whole run.
MAX_WINDOW_RECORDS_PER_NAME = 1000


class WindowRecords:
    """A `Meter` sink that appends each window's record to a run's JSONL file: the window's
    ``Measurement.to_dict()`` plus ``"kind": "window"`` and ``"run_id"``. What the default meter
    of a command under ``meter run --output F`` uses (``METER_RUN_OUTPUT``, ``METER_RUN_ID``), so
    that the command's own windows land in F next to the run's record.

    Windows of a shared group (the ASGI middleware's requests, many per second) are not
    written: their energy is in the run's record, and their per-name totals in the meter's
    ``window_stats`` (the Prometheus ``window`` label). Records are not fsynced one by one, so
    that a window per training step costs no disk flush: each is still one ``write(2)``, which
    a crash of the process cannot tear (only a crash of the machine can lose the last ones).

    >>> from meter.core import Meter
    >>> m = Meter(sinks=[WindowRecords("runs.jsonl", run_id="0123...")])  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run_id: str | None,
        fsync: bool = False,
        max_per_name: int = MAX_WINDOW_RECORDS_PER_NAME,
    ) -> None:
        self.writer = JsonlWriter(path, fsync=fsync)
        self.run_id = run_id
        self.max_per_name = max_per_name
        self._written: dict[str, int] = {}
        #: Windows not written because their name reached ``max_per_name``.
        self.skipped = 0

    @property
    def path(self) -> Path:
        return self.writer.path

    def wants(self, name: str) -> bool:
        """Whether a window of this name would still be written (its Measurement is then not
        built for nothing)."""
        if self._written.get(name, 0) < self.max_per_name:
            return True
        self._skip(name)
        return False

    def _skip(self, name: str) -> None:
        self.skipped += 1
        if self.skipped == 1:
            log.warning(
                "meter: %d records of window %r are in %s; later windows of a name past %d "
                "are not written (the run's own record holds the whole run)",
                self.max_per_name,
                name,
                self.path,
                self.max_per_name,
            )

    def __call__(self, measurement: Any) -> None:
        if measurement.group is not None:
            return
        name = measurement.name
        if not self.wants(name):
            return
        self._written[name] = self._written.get(name, 0) + 1
        self.writer.write({**measurement.to_dict(), "kind": "window", "run_id": self.run_id})


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file, skipping (with a warning) lines torn by a crash."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log.warning(
                    "meter: %s line %d is not a whole JSON record (torn by a crash?); skipped",
                    path,
                    n,
                )
                continue
            if isinstance(record, dict):
                yield record

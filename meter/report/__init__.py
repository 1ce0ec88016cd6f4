"""``meter report``: a self-contained HTML report (or JSON figures) of `meter run` records.

Reads the JSONL file that ``meter run --output F`` appends to (each run's window records, then
its run record) and draws, per run, the power of each device over time with the command's
windows shaded, the energy per device and per window name, and CO2e (location-based,
market-based, embodied, what-if zones); across several runs, energy, duration and CO2e per run
and the mean energy per window name, so that a regression stands out. The page inlines
plotly.js and opens offline. The HTML needs the ``report`` extra (plotly); ``--format json``
does not.

>>> from meter.report import main
>>> main(["runs.jsonl", "-o", "report.html"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meter.report.records import (
    ReportError,
    Run,
    is_estimate,
    method_note,
    read_runs,
    select,
    summarise,
    summarise_run,
    window_spans,
)

__all__ = [
    "ReportError",
    "Run",
    "add_parser",
    "build",
    "is_estimate",
    "main",
    "method_note",
    "read_runs",
    "run",
    "select",
    "summarise",
    "summarise_run",
    "window_spans",
]

_DESCRIPTION = """\
Make a report of the runs in FILE, the --output file of `meter run`: one HTML page that opens
offline (plotly.js inlined) with, per run, the power of each device over time with the
command's windows shaded, the energy per device and per window name, CO2e (location-based,
market-based, embodied) and the what-if zones, and the numbers in tables; across several runs,
energy, duration, CO2e and mean energy per window name per run. Estimated and simulated figures
are marked as such. The HTML needs plotly (pip install 'ai-energy-meter[report]');
--format json prints the figures without it."""


def add_parser(subparsers: Any, **kwargs: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``subparsers`` (what ``add_subparsers`` returned) and
    set its ``func`` to `run`. ``kwargs`` go to ``add_parser`` (a ``formatter_class``, say)."""
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="an HTML report (charts and tables) of the runs in a `meter run --output` file",
        description=_DESCRIPTION,
        **kwargs,
    )
    _arguments(p)
    p.set_defaults(func=run)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the JSONL file `meter run --output` wrote")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="OUT",
        help="write the report to OUT (default: FILE with .html for html, stdout for json)",
    )
    p.add_argument(
        "--run",
        default="all",
        metavar="NAME|INDEX|all",
        help="the runs to report: all (the default), a run name (every run of that name), or "
        "an index from 0 in file order (-1 is the last)",
    )
    p.add_argument(
        "--format",
        choices=("html", "json"),
        default="html",
        help="html: the page with charts (needs plotly); json: the summarised figures",
    )


def build(path: str | Path, which: str | None = "all") -> list[Run]:
    """The runs of ``path`` that ``which`` (``--run``) selects; `ReportError` if none."""
    return select(read_runs(path), which)


def run(args: argparse.Namespace) -> int:
    """Carry out ``meter report`` for parsed ``args``; 0 on success, 2 on bad input (one line
    on stderr, no traceback)."""
    try:
        runs = build(args.file, args.run)
        if args.format == "json":
            text = json.dumps(summarise(runs), indent=2) + "\n"
            if args.output:
                Path(args.output).write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0
        from meter.report.html import render

        page = render(runs, title=f"meter report: {Path(args.file).name}", source=str(args.file))
        out = Path(args.output) if args.output else Path(args.file).with_suffix(".html")
        if out.resolve() == Path(args.file).resolve():
            raise ReportError(f"-o {out} is the input file; choose another name")
        try:
            out.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise ReportError(f"could not write -o {out}: {exc.strerror or exc}") from None
    except ReportError as exc:
        print(f"meter report: {exc}", file=sys.stderr)
        return 2
    size_mb = len(page.encode("utf-8")) / 1e6
    print(f"meter report: wrote {out} ({len(runs)} run(s), {size_mb:.1f} MB)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``meter report`` on its own (``python -m meter.report FILE``)."""
    p = argparse.ArgumentParser(
        prog="meter report",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(p)
    return run(p.parse_args(argv))

"""Every ``METER_*`` environment variable, declared once: name, type, default, help.

Modules read their variables through `value` (one parser for numbers, integers, booleans and
text); the README's table is `markdown_table` (a test keeps the two equal), ``meter --help``
shows them, and `unknown` names the variables that are set but not declared (typos), with the
closest known name.

    >>> value("METER_PUE", {"METER_PUE": " 1.2 "})
    1.2
    >>> value("METER_NO_CPU", {"METER_NO_CPU": "yes"})
    True
    >>> unknown({"METER_ZOEN": "DE", "METER_ZONE": "FR"})
    [('METER_ZOEN', 'METER_ZONE')]
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meter.errors import ConfigError

__all__ = [
    "BOOLEAN_FALSE",
    "BOOLEAN_TRUE",
    "SETTINGS",
    "Setting",
    "markdown_table",
    "raw",
    "setting",
    "short",
    "unknown",
    "value",
]

Kind = Literal["number", "integer", "boolean", "text"]

#: The only spellings a boolean variable takes (anything else is an error, not "false").
BOOLEAN_TRUE = frozenset({"1", "true", "yes", "on"})
BOOLEAN_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Setting:
    """One ``METER_*`` variable."""

    name: str
    kind: Kind
    help: str
    #: What applies when the variable is unset, as shown to users ("" when nothing does).
    default: str = ""
    #: The ``meter run`` flag that sets it for the command it runs, if any.
    flag: str = ""
    #: Where it is documented in the README, for the table.
    group: str = "meter"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "METER_INTERVAL_S", "number", "sampling interval in seconds", "0.1 (10 Hz)", "--interval"
    ),
    Setting(
        "METER_GPUS",
        "text",
        "GPU ordinals to meter, e.g. `0,1` (ordinals follow `CUDA_VISIBLE_DEVICES`)",
        "every visible GPU",
        "--gpus",
    ),
    Setting("METER_NO_CPU", "boolean", "`1` to skip CPU and DRAM", "0 (meter them)", "--no-cpu"),
    Setting(
        "METER_CPU_TDP_W",
        "number",
        "TDP in watts for the CPU estimate used when RAPL is unreadable",
        "3.5 x logical CPUs",
    ),
    Setting("METER_SYNC_CUDA", "boolean", "`1` to synchronise CUDA at every window boundary", "0"),
    Setting(
        "METER_IDLE_FILE",
        "text",
        "idle-power file written by `meter calibrate`",
        "`~/.config/meter/idle.json`",
    ),
    Setting(
        "METER_GPU_CORRECTION",
        "text",
        "`auto` (or a family: `a100`, `rtx3090`, `rtx4090`, `rtxa5000`) to undo the published "
        "GPU sensor gain and offset; labelled when on",
        "off",
        "--gpu-correction",
    ),
    Setting(
        "METER_PER_RANK",
        "boolean",
        "`0` to turn off per-rank devices under torchrun (by default a rank meters its own GPU, "
        "and CPU/DRAM only on local rank 0)",
        "1",
    ),
    Setting(
        "METER_MAX_WINDOWS",
        "integer",
        "distinct window names kept in the per-name totals, the Prometheus `window` label; "
        "windows of later names count as `other`",
        "100",
    ),
    Setting(
        "METER_QUIET",
        "boolean",
        "`1` to turn off `meter run`'s live status line (shown only when stderr is a terminal)",
        "0 (shown)",
        "--quiet",
    ),
    Setting(
        "METER_RUN_ID",
        "text",
        "the run's id (32 hex digits), set by `meter run` for its command: the windows the "
        "command records to `METER_RUN_OUTPUT` carry it as `run_id`",
        "set by `meter run`",
    ),
    Setting(
        "METER_RUN_OUTPUT",
        "text",
        "JSONL file the default meter appends each window's record to (`kind: window`); "
        "`meter run --output F` sets it to F's absolute path for its command",
        "set by `meter run`",
    ),
    Setting(
        "METER_SIMULATE_GPUS",
        "text",
        "simulated GPUs, labelled `simulated`: e.g. `300,150`, `300:sampled` (no energy "
        "counter), `300:a100` (a sensor preset), `trace:DIR` (replay a recording); see "
        "[Simulated and replayed GPUs](#simulated-and-replayed-gpus)",
        "real GPUs",
    ),
    Setting(
        "METER_GPU_TRACES",
        "text",
        "folder of the GPU power recordings the replay tests and benchmarks read",
        "`../shared/data/gpu-power-traces`",
        group="testing",
    ),
    Setting(
        "METER_ZONE",
        "text",
        "grid zone, e.g. `DE`, `US-CAL-CISO`, `aws:eu-west-3` (`meter zones QUERY` searches)",
        "cloud region, else the world average",
        "--zone",
        group="carbon",
    ),
    Setting(
        "METER_PUE",
        "number",
        "data-centre power usage effectiveness (>= 1)",
        "1.0",
        "--pue",
        group="carbon",
    ),
    Setting(
        "METER_RENEWABLE_SHARE",
        "number",
        "certified renewable share of the supply, 0..1 (market-based CO2e)",
        "",
        "--renewable-share",
        group="carbon",
    ),
    Setting(
        "METER_MARKET_FACTOR_G_PER_KWH",
        "number",
        "contract emission factor in gCO2e/kWh (market-based CO2e)",
        "",
        "--market-factor",
        group="carbon",
    ),
    Setting(
        "METER_CARBON_PROVIDER",
        "text",
        "`embedded`, `constant:G`, `electricitymaps`, `watttime` or `uk`",
        "embedded",
        group="carbon",
    ),
    Setting(
        "METER_CARBON_URL", "text", "the live provider's base URL (a mirror)", "", group="carbon"
    ),
    Setting(
        "METER_CARBON_TTL_S",
        "number",
        "how long a live answer is reused, seconds",
        "300",
        group="carbon",
    ),
    Setting(
        "METER_CARBON_REFRESH_S",
        "number",
        "how often a running meter asks the live provider again, seconds",
        "60",
        group="carbon",
    ),
    Setting(
        "METER_CARBON_DEADLINE_S",
        "number",
        "the longest one live lookup may take, every retry included, seconds",
        "10",
        group="carbon",
    ),
    Setting(
        "METER_CARBON_MAX_RESPONSE_BYTES",
        "integer",
        "the largest live answer read, bytes",
        "1000000",
        group="carbon",
    ),
    Setting("METER_WATTTIME_REGION", "text", "WattTime region for the zone", "", group="carbon"),
    Setting(
        "METER_UK_REGION_ID", "integer", "UK Carbon Intensity region, 1..17", "", group="carbon"
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The declaration of ``name`` (KeyError for an undeclared variable: a bug)."""
    return _BY_NAME[name]


def short(text: str, limit: int = 80) -> str:
    """``text`` as echoed in an error: at most ``limit`` characters, with its length beyond."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's text, stripped; None when unset or blank."""
    setting(name)  # only declared variables are read
    env = os.environ if environ is None else environ
    text = env.get(name, "").strip()
    return text or None


def value(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The variable parsed by its declared kind; None when unset. A value that does not parse
    raises `ConfigError` naming the variable, what it must be, and what it got (shortened)."""
    text = raw(name, environ)
    if text is None:
        return None
    kind = setting(name).kind
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"{name}={short(text)!r} is not a number", setting=name)
        return number
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(
                f"{name}={short(text)!r} is not a whole number", setting=name
            ) from None
    if kind == "boolean":
        lowered = text.lower()
        if lowered in BOOLEAN_TRUE:
            return True
        if lowered in BOOLEAN_FALSE:
            return False
        raise ConfigError(
            f"{name}={short(text)!r} is neither true nor false: use 1, true, yes or on, or 0, "
            "false, no or off",
            setting=name,
        )
    return text


def unknown(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``METER_*`` variables that are set but not declared (typos), each with the closest
    declared name (or None)."""
    env = os.environ if environ is None else environ
    suffixes = {s.name[6:]: s.name for s in SETTINGS}  # compared without the METER_ prefix
    out = []
    for name in sorted(env):
        if name.startswith("METER_") and name not in _BY_NAME:
            close = difflib.get_close_matches(name[6:], list(suffixes), n=1, cutoff=0.6)
            out.append((name, suffixes[close[0]] if close else None))
    return out


def markdown_table(groups: tuple[str, ...] = ("meter", "carbon", "testing")) -> str:
    """The README's table of variables, from the declarations."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    for s in SETTINGS:
        if s.group in groups:
            lines.append(f"| `{s.name}` | {s.help} | {s.default or '-'} |")
    return "\n".join(lines)

"""`/metrics` render time: the Prometheus exposition of a meter with 8 simulated GPUs, CPU-less,
100 named windows, carbon on (location and market) and idle baselines, rendered by
prometheus_client's ``generate_latest`` from the registry meter's scrape server serves.

Budget (DESIGN.md): < 5 ms with 8 GPUs and 100 windows. Also timed over real HTTP from
`start_http_server` on 127.0.0.1 (one keep-alive-less GET per scrape), which adds the server's
own cost.

Under load: 200 scrapers against that server for 10 s each way (5 s with ``--quick``), from a
process of their own (benchmarks/scrapers.py: asyncio, a new connection per scrape, a 10 s
scrape timeout like Prometheus'). Back to back, each scrapes again as soon as its reply is in:
the server is saturated the whole time, so the latency is the queue of 200 over the server's
throughput, and what matters is that no scrape is dropped. Every 1 s, each scrapes once a second
from a random phase, as Prometheus spreads its targets: 200 scrapes a second, below saturation.
Target for both: no failed scrape and a p99 latency < 250 ms.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import simulated_meter, summarize

BUDGET_MS = 5.0
GPUS = 8
WINDOWS = 100
#: Scrapers at once, and the p99 scrape latency they may see.
SCRAPERS = 200
LOAD_P99_BUDGET_MS = 250.0
#: The loads: a label and each scraper's interval in seconds (0: back to back).
LOADS = (("back to back", 0.0), ("every 1 s", 1.0))
SCRAPERS_SCRIPT = Path(__file__).resolve().parent / "scrapers.py"


def _ms(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def scrape_load(url: str, seconds: float, interval_s: float) -> dict[str, Any]:
    """`SCRAPERS` scrapers against ``url`` for ``seconds``, each every ``interval_s`` (0: back
    to back), from benchmarks/scrapers.py in a process of its own: scrapes, errors by kind,
    latency percentiles in ms."""
    command = [sys.executable, str(SCRAPERS_SCRIPT), url, "--scrapers", str(SCRAPERS)]
    command += ["--seconds", str(seconds), "--interval", str(interval_s)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    raw = json.loads(out.stdout)
    latencies = sorted(raw.pop("latency_ms"))
    errors = sum(raw["errors"].values())
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        p50, p90, p99 = q[49], q[89], q[98]
    else:
        p50 = p90 = p99 = latencies[0] if latencies else None
    return {
        **raw,
        "error_count": errors,
        "per_s": raw["scrapes"] / raw["wall_s"],
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": latencies[-1] if latencies else None,
        "p99_budget_ms": LOAD_P99_BUDGET_MS,
        "pass": errors == 0 and p99 is not None and p99 < LOAD_P99_BUDGET_MS,
    }


def run(quick: bool) -> dict[str, Any]:
    from meter.exporters.prometheus import make_registry, start_http_server
    from meter.exporters.prometheus.server import LISTEN_BACKLOG, RENDER_REUSE_S
    from prometheus_client import generate_latest

    scrapes = 50 if quick else 200
    idle = {f"gpu:{i}": 60.0 for i in range(GPUS)}
    with simulated_meter(GPUS, 0.1, idle_power_w=idle, market_factor_g_per_kwh=50.0, zone="DE") as (
        m,
        _,
    ):
        m.wait_ready()
        for i in range(WINDOWS):
            with m.measure(f"window-{i:03d}"):
                pass
        registry = make_registry(m)
        text = generate_latest(registry)
        series = sum(1 for line in text.decode().splitlines() if line and line[0] != "#")
        _ms(lambda: generate_latest(registry), 10)  # warm-up
        render = summarize(_ms(lambda: generate_latest(registry), scrapes))
        with start_http_server(m, port=0) as server:

            def get() -> None:
                with urllib.request.urlopen(server.url, timeout=5) as reply:
                    reply.read()

            _ms(get, 5)
            http = summarize(_ms(get, scrapes))
            before = server.app.renders
            loads = [
                {"label": label, **scrape_load(server.url, 5.0 if quick else 10.0, interval)}
                for label, interval in LOADS
            ]
            renders = server.app.renders - before
    return {
        "gpus": GPUS,
        "windows": WINDOWS,
        "series": series,
        "bytes": len(text),
        "render_ms": render,
        "http_ms": http,
        "loads": loads,
        "listen_backlog": LISTEN_BACKLOG,
        "reuse_s": RENDER_REUSE_S,
        "renders": renders,
        "budget_ms": BUDGET_MS,
        "pass": render["median"] < BUDGET_MS,
    }

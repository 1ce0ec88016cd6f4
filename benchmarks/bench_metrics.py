"""`/metrics` render time: the Prometheus exposition of a meter with 8 simulated GPUs, CPU-less,
100 named windows, carbon on (location and market) and idle baselines, rendered by
prometheus_client's ``generate_latest`` from the registry meter's scrape server serves.

Budget (DESIGN.md): < 5 ms with 8 GPUs and 100 windows. Also timed over real HTTP from
`start_http_server` on 127.0.0.1 (one keep-alive-less GET per scrape), which adds the server's
own cost.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from common import simulated_meter, summarize

BUDGET_MS = 5.0
GPUS = 8
WINDOWS = 100


def _ms(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def run(quick: bool) -> dict[str, Any]:
    from meter.exporters.prometheus import make_registry, start_http_server
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
    return {
        "gpus": GPUS,
        "windows": WINDOWS,
        "series": series,
        "bytes": len(text),
        "render_ms": render,
        "http_ms": http,
        "budget_ms": BUDGET_MS,
        "pass": render["median"] < BUDGET_MS,
    }

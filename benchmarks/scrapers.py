"""A crowd of Prometheus-like scrapers, run in its own process against a ``/metrics`` URL.

    python benchmarks/scrapers.py http://127.0.0.1:PORT/metrics --scrapers 200 --seconds 10

Each scraper opens a connection, sends a GET, reads the whole reply and closes, then scrapes
again at once (``--interval 0``) or at its next slot (``--interval S``: every S seconds from a
random phase, as Prometheus spreads its targets over the interval). A scrape is an error when it
fails to connect, takes longer than ``--timeout`` (Prometheus' default ``scrape_timeout`` is
10 s), or does not return a 200 with the whole body its ``Content-Length`` announced. Prints one
JSON object: the scrapes, the errors by kind, and every successful scrape's latency in ms.

An asyncio client in a process of its own, so that the server under test does not share its
interpreter (and its GIL) with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit


async def _get(host: str, port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        return await reader.read()
    finally:
        writer.close()


async def _scrape(host: str, port: int, request: bytes, timeout: float) -> tuple[str, float]:
    """One scrape: ``("ok", ms)`` or ``(error kind, ms)``."""
    t0 = time.perf_counter()
    try:
        reply = await asyncio.wait_for(_get(host, port, request), timeout)
    except asyncio.TimeoutError:
        return "timeout", (time.perf_counter() - t0) * 1e3
    except OSError as exc:
        return type(exc).__name__, (time.perf_counter() - t0) * 1e3
    ms = (time.perf_counter() - t0) * 1e3
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/") or lines[0].split()[1:2] != [b"200"]:
        return "status", ms
    headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
    length = headers.get(b"Content-Length") or headers.get(b"content-length")
    if length is None or int(length) != len(body) or b"meter_energy_joules_total" not in body:
        return "truncated", ms
    return "ok", ms


async def crowd(url: str, scrapers: int, seconds: float, interval: float, timeout: float) -> Any:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Accept: text/plain;version=0.0.4\r\nConnection: close\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    start = time.perf_counter()
    end = start + seconds

    async def scraper(phase: float) -> None:
        due = start + phase
        while True:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            if time.perf_counter() >= end:
                return
            kind, ms = await _scrape(host, port, request, timeout)
            if kind == "ok":
                latencies.append(ms)
            else:
                errors[kind] += 1
            due = due + interval if interval > 0 else 0.0

    rng = random.Random(0)
    await asyncio.gather(*(scraper(rng.uniform(0, interval)) for _ in range(scrapers)))
    return {
        "scrapers": scrapers,
        "seconds": seconds,
        "interval_s": interval,
        "timeout_s": timeout,
        "scrapes": len(latencies) + sum(errors.values()),
        "errors": dict(errors),
        "latency_ms": latencies,
        "wall_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--scrapers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = asyncio.run(crowd(args.url, args.scrapers, args.seconds, args.interval, args.timeout))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()

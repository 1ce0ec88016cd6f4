"""Budget: the ASGI middleware adds < 50 microseconds per request (no NVML call on its path).

**Added latency**, in-process (no network): an ASGI app is called in a tight asyncio loop,
batches of 1000 requests alternating without and with `meter.integrations.asgi.EnergyMiddleware`
(its Prometheus metrics on, in a fresh registry; sampler at 10 Hz); the figure is the paired
difference per batch. Apps: a bare ASGI app answering an OpenAI-style JSON body with ``usage``
(what the budget is judged on) on 1, 2 and 8 simulated GPUs; the same with the energy response
header; a stream of 32 server-sent events plus a final ``usage`` chunk; and a FastAPI route.
The simulated GPUs are read by the sampler thread only: every NVML call is recorded with the
thread that made it.

**Throughput**, over the network: the FastAPI app under uvicorn (h11) on 127.0.0.1 in two server
processes, one with the middleware (its defaults: the process default meter on 2 simulated GPUs,
sampling at 10 Hz) and one without (no meter at all), loaded in turn, in short alternating runs,
by 4 keep-alive connections from this process; requests per second and the server process's
CPU time per request (which includes the meter's sampler thread).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import NO_IDLE_FILE, summarize

if TYPE_CHECKING:
    from meter.testing import RecordingNVML

BUDGET_US = 50.0
BATCH = 1000
SSE_CHUNKS = 32
CONNECTIONS = 4

App = Callable[..., Awaitable[None]]

_USAGE = {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36}
_ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "toy",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "word " * 24},
                "finish_reason": "length",
            }
        ],
        "usage": _USAGE,
    }
).encode()
_JSON_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_ANSWER)).encode()),
    ],
}
_JSON_BODY = {"type": "http.response.body", "body": _ANSWER, "more_body": False}
_SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
}
_SSE_CHUNK = {
    "type": "http.response.body",
    "body": b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,'
    b'"text":" word","finish_reason":null}]}\n\n',
    "more_body": True,
}
_SSE_USAGE = {
    "type": "http.response.body",
    "body": f'data: {{"id":"cmpl-1","choices":[],"usage":{json.dumps(_USAGE)}}}\n\n'.encode(),
    "more_body": True,
}
_SSE_END = {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/v1/completions",
    "raw_path": b"/v1/completions",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 1234),
    "server": ("127.0.0.1", 80),
}


async def json_app(scope: Any, receive: Any, send: Any) -> None:
    await send(_JSON_START)
    await send(_JSON_BODY)


async def sse_app(scope: Any, receive: Any, send: Any) -> None:
    await send(_SSE_START)
    for _ in range(SSE_CHUNKS):
        await send(_SSE_CHUNK)
    await send(_SSE_USAGE)
    await send(_SSE_END)


def fastapi_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()

    @app.get("/v1/completions")
    async def completions() -> Response:
        return Response(_ANSWER, media_type="application/json")

    return app


# -- in-process latency -------------------------------------------------------------------------


@contextmanager
def recorded_meter(n_gpus: int) -> Iterator[tuple[Any, RecordingNVML]]:
    from meter import Meter
    from meter.testing import FakeNVML, RecordingNVML, SimulatedGPU

    nvml = RecordingNVML(FakeNVML([SimulatedGPU(300.0) for _ in range(n_gpus)]))
    m = Meter(nvml=nvml, cpu=False, interval_s=0.1, idle_file=NO_IDLE_FILE)
    try:
        m.wait_ready()
        yield m, nvml
    finally:
        m.close()


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    pass


async def _batch(app: App, n: int) -> float:
    """Microseconds per request over ``n`` sequential in-process requests."""
    scope = _SCOPE
    t0 = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), _receive, _send)
    return (time.perf_counter() - t0) / n * 1e6


async def _paired(plain: App, metered: App, batches: int) -> dict[str, Any]:
    await _batch(plain, BATCH // 10)  # warm-up (FastAPI builds its middleware stack)
    await _batch(metered, BATCH // 10)
    without, with_, added = [], [], []
    for i in range(batches):
        if i % 2:
            b = await _batch(metered, BATCH)
            a = await _batch(plain, BATCH)
        else:
            a = await _batch(plain, BATCH)
            b = await _batch(metered, BATCH)
        without.append(a)
        with_.append(b)
        added.append(b - a)
    return {
        "without_us": summarize(without),
        "with_us": summarize(with_),
        "added_us": summarize(added),
    }


def latency(batches: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    from meter.integrations.asgi import EnergyMiddleware
    from prometheus_client import CollectorRegistry

    cases: list[tuple[int, str, str, App | None, dict[str, Any]]] = [
        (1, "json", "bare ASGI app, JSON with `usage`", json_app, {}),
        (2, "json", "bare ASGI app, JSON with `usage`", json_app, {}),
        (8, "json", "bare ASGI app, JSON with `usage`", json_app, {}),
        (
            2,
            "header",
            "same, with the energy header",
            json_app,
            {"energy_header": "x-energy-joules"},
        ),
        (2, "sse", f"SSE: {SSE_CHUNKS} chunks + `usage` chunk + [DONE]", sse_app, {}),
        (2, "fastapi", "FastAPI route, JSON body", None, {}),
    ]
    rows: list[dict[str, Any]] = []
    threads: collections.Counter[str] = collections.Counter()
    for gpus in sorted({c[0] for c in cases}):
        with recorded_meter(gpus) as (m, nvml):
            for n, case, label, app, options in cases:
                if n != gpus:
                    continue
                plain = app if app is not None else fastapi_app()
                inner = app if app is not None else fastapi_app()
                metered = EnergyMiddleware(inner, meter=m, registry=CollectorRegistry(), **options)
                nvml.threads.clear()
                result = asyncio.run(_paired(plain, metered, batches))
                threads.update(nvml.threads)
                judged = case == "json"
                rows.append(
                    {
                        "gpus": gpus,
                        "case": case,
                        "label": label,
                        **result,
                        "messages": SSE_CHUNKS + 3 if case == "sse" else 2,
                        "per_message_added_us": (
                            result["added_us"]["median"] / (SSE_CHUNKS + 3)
                            if case == "sse"
                            else None
                        ),
                        "pass": result["added_us"]["median"] < BUDGET_US if judged else None,
                    }
                )
    return rows, dict(threads)


# -- throughput under uvicorn --------------------------------------------------------------------


def serve(metered: bool) -> None:
    """Server process: the FastAPI app under uvicorn on a free port (printed on stdout)."""
    import uvicorn

    app = fastapi_app()
    if metered:
        from meter.integrations.asgi import EnergyMiddleware

        app.add_middleware(EnergyMiddleware)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


_REQUEST = b"GET /v1/completions HTTP/1.1\r\nHost: bench\r\n\r\n"


def _client(port: int, stop: threading.Event, counts: list[int], i: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        n = 0
        while not stop.is_set():
            s.sendall(_REQUEST)
            f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            f.read(length)
            n += 1
        counts[i] = n


def _load(port: int, seconds: float) -> int:
    stop = threading.Event()
    counts = [0] * CONNECTIONS
    threads = [
        threading.Thread(target=_client, args=(port, stop, counts, i)) for i in range(CONNECTIONS)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts)


def _start_server(metered: bool) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, METER_SIMULATE_GPUS="300,150", METER_NO_CPU="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", "1" if metered else "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    deadline = time.monotonic() + 60
    while True:  # ready once it answers (the metered one has started its meter by then)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(_REQUEST)
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.1)


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def throughput(pairs: int, seconds: float) -> dict[str, Any]:
    servers = {name: _start_server(name == "with") for name in ("without", "with")}
    rps: dict[str, list[float]] = {"without": [], "with": []}
    cpu_us: dict[str, list[float]] = {"without": [], "with": []}
    try:
        for _, port in servers.values():
            _load(port, 0.5)  # warm-up
        for i in range(pairs):
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            for name in order:
                proc, port = servers[name]
                cpu0 = _cpu_s(proc.pid)
                t0 = time.perf_counter()
                n = _load(port, seconds)
                elapsed = time.perf_counter() - t0
                rps[name].append(n / elapsed)
                cpu_us[name].append((_cpu_s(proc.pid) - cpu0) / max(n, 1) * 1e6)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    without, with_ = summarize(rps["without"]), summarize(rps["with"])
    cpu_without, cpu_with = summarize(cpu_us["without"]), summarize(cpu_us["with"])
    return {
        "connections": CONNECTIONS,
        "seconds": seconds,
        "pairs": pairs,
        "without_rps": without,
        "with_rps": with_,
        "change_pct": (with_["median"] / without["median"] - 1) * 100,
        "without_cpu_us": cpu_without,
        "with_cpu_us": cpu_with,
        "added_cpu_us": cpu_with["median"] - cpu_without["median"],
    }


def run(quick: bool) -> dict[str, Any]:
    batches = 6 if quick else 20
    rows, threads = latency(batches)
    return {
        "batch": BATCH,
        "batches": batches,
        "sampler_interval_s": 0.1,
        "configs": rows,
        "nvml_calls_by_thread": threads,
        "throughput": throughput(6 if quick else 8, 1.0 if quick else 2.0),
        "budget_us": BUDGET_US,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2] == "1")
    else:
        print(json.dumps(run("--quick" in sys.argv), indent=1))

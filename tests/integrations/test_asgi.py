"""`EnergyMiddleware` on FastAPI apps under a real uvicorn on 127.0.0.1, on simulated GPUs.

Concurrent clients check the fair split (the requests' shares add up to the device energy over
the busy time), output tokens from JSON bodies and server-sent events, the route label cap under
10,000 distinct raw paths, and ``/metrics``. Message-level details (held response starts,
exceptions, non-HTTP scopes) are checked by calling the middleware in-process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from meter.exporters.grafana import promql_expressions
from meter.exporters.prometheus import register
from meter.integrations.asgi import (
    OTHER,
    UNMATCHED,
    EnergyMiddleware,
    RequestMeasurement,
    RequestMetrics,
)
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from meter import ConfigError, Meter
from meter.testing import FakeNVML, RecordingNVML, SimulatedGPU
from tests.exporters.promservers import need_binary, run_prometheus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WATTS = (300.0, 150.0)
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
#: Hang guard for waits on the server (never a timing assertion).
GUARD_S = 20.0


# -- a real server ------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn (lifespan on) on a free 127.0.0.1 port in a thread; its URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says it is TCP (proto 0 would leave Nagle on: 40 ms per response).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + GUARD_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=GUARD_S)
        sock.close()


def raw_get_many(url: str, paths: Sequence[str], connections: int = 4) -> list[int]:
    """GET every path over ``connections`` keep-alive sockets (a client far cheaper than
    httpx, so that 10,000 requests take seconds); the status codes."""
    host, port = url.removeprefix("http://").split(":")
    statuses: list[int] = []

    def worker(chunk: Sequence[str]) -> None:
        with socket.create_connection((host, int(port)), timeout=GUARD_S) as s:
            f = s.makefile("rb")
            for path in chunk:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                status = int(f.readline().split()[1])
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                f.read(length)
                statuses.append(status)

    threads = [
        threading.Thread(target=worker, args=(paths[i::connections],)) for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(sample name, labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=GUARD_S).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


# -- an OpenAI-style app ------------------------------------------------------------------------


def sse(chunks: Sequence[dict[str, Any] | str]) -> list[str]:
    return [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks]


def usage(tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens}


def openai_app(registry: CollectorRegistry | None = None) -> FastAPI:
    """Chat completions answer JSON (``usage`` included unless ``"usage": false``);
    completions stream one SSE chunk per token, the final one with ``usage`` unless
    ``"usage": false``. ``delay_s`` is the time to answer. Tracks the peak of requests in
    flight. With a ``registry``, ``GET /metrics`` serves it."""
    app = FastAPI()
    app.state.in_flight = 0
    app.state.peak = 0

    def enter() -> None:
        app.state.in_flight += 1
        app.state.peak = max(app.state.peak, app.state.in_flight)

    @app.post(CHAT)
    async def chat(request: Request) -> Any:
        body = await request.json()
        tokens = int(body.get("max_tokens", 8))
        enter()
        try:
            await asyncio.sleep(float(body.get("delay_s", 0.0)))
        finally:
            app.state.in_flight -= 1
        answer: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " * tokens}}],
        }
        if body.get("usage", True):
            answer["usage"] = usage(tokens)
        return answer

    @app.post(COMPLETIONS)
    async def completions(request: Request) -> Any:
        body = await request.json()
        tokens = int(body.get("max_tokens", 8))
        delay = float(body.get("delay_s", 0.0))

        async def stream() -> AsyncIterator[str]:
            enter()
            try:
                for _ in range(tokens):
                    await asyncio.sleep(delay / tokens)
                    yield sse([{"choices": [{"index": 0, "text": "hi "}]}])[0]
                if body.get("usage", True):
                    yield sse([{"choices": [], "usage": usage(tokens)}])[0]
                yield "data: [DONE]\n\n"
            finally:
                app.state.in_flight -= 1

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> Any:
        if item_id < 0:
            raise HTTPException(status_code=404, detail="no such item")
        return {"id": item_id}

    @app.get("/health")
    async def health() -> Any:
        return {"ok": True}

    if registry is not None:

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def metered(
    app: FastAPI, meter: Meter, registry: CollectorRegistry | None, **options: Any
) -> list[RequestMeasurement]:
    """Add the middleware; the list its ``on_measurement`` fills."""
    seen: list[RequestMeasurement] = []
    app.add_middleware(
        EnergyMiddleware,
        meter=meter,
        registry=registry,
        on_measurement=lambda scope, r: seen.append(r),
        **options,
    )
    return seen


def rel_err(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


# -- in-process ASGI calls ----------------------------------------------------------------------


def http_scope(method: str = "GET", path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """One request through ``app`` in-process; the messages it sent."""
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.get_running_loop().create_future()  # no disconnect: wait forever
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def raw_app(*messages: dict[str, Any], raises: BaseException | None = None) -> Callable[..., Any]:
    """A plain ASGI app that sends ``messages`` and then raises ``raises``, if given."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        if raises is not None:
            raise raises

    return app


def start(status: int = 200, body: bytes = b"", **headers: str) -> dict[str, Any]:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if body and "content_length" not in headers:
        raw.append((b"content-length", str(len(body)).encode()))
    return {"type": "http.response.start", "status": status, "headers": raw}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


@pytest.fixture
def gpus2(meter_factory: Callable[..., Meter]) -> Meter:
    """A started meter on two simulated GPUs (300 W, 150 W), sampled at 100 Hz."""
    m = meter_factory(*WATTS, interval_s=0.01)
    m.wait_ready()
    return m


# -- the fair split, tokens and /metrics under concurrent load ----------------------------------


def test_concurrent_requests_split_the_energy_and_metrics_show_it(gpus2: Meter) -> None:
    """The done-when: two simulated GPUs, concurrent clients, per-route request energy and
    energy per output token on /metrics; the shares add up to the busy energy."""
    registry = CollectorRegistry(auto_describe=False)
    register(gpus2, registry)  # the device metrics on the same /metrics
    app = openai_app(registry)
    seen = metered(app, gpus2, registry)
    clients, rounds = 12, 4
    expected_tokens = {CHAT: 0, COMPLETIONS: 0}

    async def client(i: int, c: httpx.AsyncClient) -> None:
        for k in range(rounds):
            tokens = 3 + (i + k) % 7
            path = CHAT if (i + k) % 2 else COMPLETIONS
            expected_tokens[path] += tokens
            payload = {"max_tokens": tokens, "delay_s": 0.02 + 0.02 * ((i * k) % 4)}
            r = await c.post(path, json=payload)
            assert r.status_code == 200

    async def load(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=GUARD_S) as c:
            await asyncio.gather(*(client(i, c) for i in range(clients)))

    with serve(app) as url:
        asyncio.run(load(url))
        group = gpus2.group("http")
        busy_j = list(group.busy_energy_j)
        busy_s = group.busy_s
        requests = list(seen)
        samples = scrape(url)

    assert len(requests) == clients * rounds
    assert app.state.peak >= 4, "the load should have overlapped"
    total = sum(r.energy_j for r in requests)
    assert rel_err(total, sum(busy_j)) < 0.02, (total, busy_j)
    assert rel_err(total, sum(WATTS) * busy_s) < 0.02, (total, busy_s)
    for i, watts in enumerate(WATTS):
        share = sum(r.measurement.devices[f"gpu:{i}"].energy_j for r in requests)
        assert rel_err(share, busy_j[i]) < 0.02, (i, share, busy_j[i])
        assert rel_err(share, watts * busy_s) < 0.02, (i, share, watts * busy_s)
    assert all(r.measurement.group == "http" for r in requests)

    for path in (CHAT, COMPLETIONS):
        mine = [r for r in requests if r.route == path]
        assert mine and all(r.status == 200 and r.method == "POST" for r in mine)
        assert all(r.streamed == (path == COMPLETIONS) for r in mine)
        assert sum(r.output_tokens or 0 for r in mine) == expected_tokens[path]
        labels = {"route": path, "method": "POST", "status": "2xx"}
        energy = sample(samples, "meter_request_energy_joules_sum", **labels)
        count = sample(samples, "meter_request_energy_joules_count", **labels)
        tokens = sample(samples, "meter_output_tokens_total", **labels)
        co2e = sample(samples, "meter_request_co2e_grams_total", **labels)
        assert energy is not None and tokens is not None and co2e is not None
        assert count == len(mine) == sample(samples, "meter_requests_total", **labels)
        assert energy == pytest.approx(sum(r.energy_j for r in mine), rel=1e-9)
        assert tokens == expected_tokens[path]
        assert co2e == pytest.approx(sum(r.measurement.co2e_g or 0 for r in mine), rel=1e-9)
        assert co2e > 0
        per_token = energy / tokens  # what the dashboard plots
        assert per_token == pytest.approx(
            sum(r.energy_j for r in mine) / sum(r.output_tokens or 0 for r in mine)
        )
    for i in range(len(WATTS)):
        assert any(
            name == "meter_energy_joules_total" and ("device", f"gpu:{i}") in labels
            for name, labels in samples
        )


def test_a_real_prometheus_fills_the_dashboards_request_panels(gpus2: Meter) -> None:
    """Prometheus scrapes the server under load; every request-metric query of the shipped
    Grafana dashboard returns finite values."""
    need_binary("prometheus")
    registry = CollectorRegistry(auto_describe=False)
    register(gpus2, registry)
    app = openai_app(registry)
    metered(app, gpus2, registry)
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=GUARD_S) as c:
            while not stop.is_set():
                c.post(CHAT, json={"max_tokens": 5, "delay_s": 0.02})
                c.post(COMPLETIONS, json={"max_tokens": 4, "delay_s": 0.02})
                stop.wait(0.05)

    def has_data(result: list[dict[str, Any]]) -> bool:
        return bool(result) and all(math.isfinite(float(r["value"][1])) for r in result)

    expressions = promql_expressions(request_metrics=True)
    assert len(expressions) >= 5
    with serve(app) as url:
        client = threading.Thread(target=load, args=(url,), name="load", daemon=True)
        client.start()
        try:
            with run_prometheus([url.removeprefix("http://")], scrape_interval="1s") as prom:
                for expr in expressions:
                    prom.wait_for(expr, has_data, timeout=GUARD_S)
                routes = prom.query("sum by (route) (meter_requests_total)")
        finally:
            stop.set()
            client.join(GUARD_S)
    assert {r["metric"]["route"] for r in routes} >= {CHAT, COMPLETIONS, "/metrics"}


def test_a_request_inside_another_gets_half_the_power(gpus2: Meter) -> None:
    """B runs entirely while A is open: B gets half the devices' power over its time; A gets
    the whole power alone and the other half during B."""
    a_running = threading.Event()
    b_recorded = threading.Event()
    app = FastAPI()

    @app.get("/a")
    async def a() -> Any:
        a_running.set()
        deadline = time.monotonic() + GUARD_S
        while not b_recorded.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return {"a": True}

    @app.get("/b")
    async def b() -> Any:
        await asyncio.sleep(0.3)
        return {"b": True}

    found: dict[str, RequestMeasurement] = {}

    def hook(scope: Any, r: RequestMeasurement) -> None:
        found[r.route] = r
        if r.route == "/b":
            b_recorded.set()

    app.add_middleware(EnergyMiddleware, meter=gpus2, registry=None, on_measurement=hook)
    with serve(app) as url:
        result: list[int] = []
        first = threading.Thread(
            target=lambda: result.append(httpx.get(f"{url}/a", timeout=GUARD_S).status_code)
        )
        first.start()
        assert a_running.wait(GUARD_S)
        assert httpx.get(f"{url}/b", timeout=GUARD_S).status_code == 200
        first.join(GUARD_S)
    assert result == [200]
    a_m, b_m = found["/a"].measurement, found["/b"].measurement
    power = sum(WATTS)
    assert rel_err(b_m.energy_j, power * b_m.duration_s / 2) < 0.03, (b_m.energy_j, b_m)
    alone_s = a_m.duration_s - b_m.duration_s
    assert alone_s > 0
    assert rel_err(a_m.energy_j, power * alone_s + b_m.energy_j) < 0.03
    # Together, the busy energy: A's whole span at full power.
    assert rel_err(a_m.energy_j + b_m.energy_j, power * a_m.duration_s) < 0.03


# -- output tokens ------------------------------------------------------------------------------


def test_output_tokens_from_json_and_streamed_usage(gpus2: Meter) -> None:
    registry = CollectorRegistry()
    app = openai_app(registry)
    key = json.dumps({"choices": [], "usage": usage(11)})
    cut = key.index("completion_tokens") + 6  # the usage key cut in two across messages

    @app.get("/split")
    async def split() -> Any:
        parts = ["data: {}\n\n", f"data: {key[:cut]}", f"{key[cut:]}\n\n", "data: [DONE]\n\n"]

        async def gen() -> AsyncIterator[str]:
            for part in parts:
                yield part

        return StreamingResponse(gen(), media_type="text/event-stream")

    @app.get("/continuous")
    async def continuous() -> Any:
        # vLLM's continuous_usage_stats: cumulative usage in every chunk; the last one counts.
        chunks = sse([{"choices": [], "usage": usage(n)} for n in (1, 2, 3, 4)])
        return StreamingResponse(iter(chunks), media_type="text/event-stream")

    @app.get("/quoted")
    async def quoted() -> Any:
        # The text of a completion that talks about usage is not usage.
        return {"choices": [{"text": '{"completion_tokens": 99, "output_tokens": 98}'}]}

    @app.get("/responses")
    async def responses() -> Any:
        return {"output": [], "usage": {"input_tokens": 5, "output_tokens": 13}}

    seen = metered(app, gpus2, registry)
    with serve(app) as url, httpx.Client(base_url=url, timeout=GUARD_S) as c:
        assert c.post(CHAT, json={"max_tokens": 7}).json()["usage"]["completion_tokens"] == 7
        c.post(CHAT, json={"max_tokens": 4, "usage": False})
        streamed = c.post(COMPLETIONS, json={"max_tokens": 5})
        assert streamed.text.endswith("data: [DONE]\n\n") and '"completion_tokens": 5' in (
            streamed.text
        )
        c.post(COMPLETIONS, json={"max_tokens": 6, "usage": False})
        for path in ("/split", "/continuous", "/quoted", "/responses"):
            assert c.get(path).status_code == 200
        samples = scrape(url)

    tokens = [(r.route, r.output_tokens, r.streamed) for r in seen if r.route != "/metrics"]
    assert tokens == [
        (CHAT, 7, False),
        (CHAT, None, False),
        (COMPLETIONS, 5, True),
        (COMPLETIONS, None, True),
        ("/split", 11, True),
        ("/continuous", 4, True),
        ("/quoted", None, False),
        ("/responses", 13, False),
    ]
    assert seen[0].energy_per_output_token_j == pytest.approx(seen[0].energy_j / 7)
    assert seen[1].energy_per_output_token_j is None
    for route, method, want in ((CHAT, "POST", 7), (COMPLETIONS, "POST", 5), ("/split", "GET", 11)):
        labels = {"route": route, "method": method, "status": "2xx"}
        assert sample(samples, "meter_output_tokens_total", **labels) == want
    assert (
        sample(samples, "meter_output_tokens_total", route="/quoted", method="GET", status="2xx")
        is None
    )


# -- labels -------------------------------------------------------------------------------------


def test_ten_thousand_raw_paths_stay_within_the_route_cap(gpus2: Meter) -> None:
    registry = CollectorRegistry()
    app = openai_app(registry)

    async def files(scope: Any, receive: Any, send: Any) -> None:
        await send(start(200, b"file"))
        await send(body(b"file"))

    # A mount with a parameter and a plain ASGI app inside: its raw prefix is the label, so
    # every name would be a new route without the cap.
    app.mount("/files/{name}", files)
    max_routes = 20
    seen = metered(app, gpus2, registry, max_routes=max_routes)
    with serve(app) as url:
        assert raw_get_many(url, ["/items/1"], connections=1) == [200]
        paths = [f"/files/f{i}/" if i % 2 else f"/no/such/page/{i}" for i in range(10_000)]
        statuses = raw_get_many(url, paths)
        after = raw_get_many(url, ["/items/2", "/health", "/items/-1"], connections=1)
        records = list(seen)
        samples = scrape(url)

    assert collections.Counter(statuses) == {200: 5000, 404: 5000}
    assert after == [200, 200, 404]
    routes = collections.Counter(r.route for r in records)
    # The first request's template, then max_routes - 1 raw mount prefixes, then "other".
    assert routes["/items/{item_id}"] == 3
    assert sum(n for route, n in routes.items() if route.startswith("/files/")) == max_routes - 1
    assert routes[UNMATCHED] == 5000  # the router's 404s: never a per-path label
    # The remaining mounted files, and /health, a real route that came after the cap was full.
    assert routes[OTHER] == 5000 - (max_routes - 1) + 1
    assert len(routes) == max_routes + 2
    assert [r.route for r in records[-3:]] == ["/items/{item_id}", OTHER, "/items/{item_id}"]
    series = {labels for name, labels in samples if name == "meter_requests_total"}
    label_routes = {dict(labels)["route"] for labels in series}
    assert len(label_routes) <= max_routes + 2, sorted(label_routes)
    assert sum(v for (name, _), v in samples.items() if name == "meter_requests_total") == 10_004
    assert len(samples) < 2_000, "the series count stays bounded"


def test_methods_and_statuses_are_bounded_labels(gpus2: Meter) -> None:
    app = openai_app()
    seen = metered(app, gpus2, CollectorRegistry())

    async def run() -> None:
        await call(app, http_scope("BREW", "/items/3"))  # 405 from a matched route
        await call(app, http_scope("GET", "/items/-1"))  # 404 raised inside a route

    asyncio.run(run())
    assert [(r.route, r.method, r.status, r.status_class) for r in seen] == [
        ("/items/{item_id}", OTHER, 405, "4xx"),
        ("/items/{item_id}", "GET", 404, "4xx"),
    ]


def test_routes_in_mounted_apps_carry_the_mount_prefix(gpus2: Meter) -> None:
    inner = FastAPI()

    @inner.get("/models/{name}")
    async def model(name: str) -> Any:
        return {"name": name}

    app = FastAPI()
    app.mount("/v2", inner)
    seen = metered(app, gpus2, CollectorRegistry())
    asyncio.run(call(app, http_scope("GET", "/v2/models/llama")))
    assert [r.route for r in seen] == ["/v2/models/{name}"]


# -- the response header, streaming, the app's state --------------------------------------------


def test_energy_header_on_whole_responses_only(gpus2: Meter) -> None:
    app = openai_app()

    async def chunked(scope: Any, receive: Any, send: Any) -> None:
        await send(start(200, content_length="10", content_type="text/plain"))
        await send(body(b"01234", more=True))
        await send(body(b"56789"))

    app.mount("/chunked", chunked)
    seen = metered(app, gpus2, None, energy_header="X-Energy-Joules")
    with serve(app) as url, httpx.Client(base_url=url, timeout=GUARD_S) as c:
        whole = c.post(CHAT, json={"max_tokens": 2, "delay_s": 0.05})
        stream = c.post(COMPLETIONS, json={"max_tokens": 2})
        parts = c.get("/chunked/")

    assert whole.json()["usage"]["completion_tokens"] == 2
    assert int(whole.headers["content-length"]) == len(whole.content)
    assert float(whole.headers["x-energy-joules"]) == pytest.approx(seen[0].energy_j, abs=1e-6)
    assert seen[0].energy_j > 1.0  # 450 W x 50 ms, alone
    assert "x-energy-joules" not in stream.headers and stream.text.endswith("[DONE]\n\n")
    assert "x-energy-joules" not in parts.headers and parts.text == "0123456789"


def test_streamed_chunks_are_not_held_back(gpus2: Meter) -> None:
    proceed = threading.Event()
    app = FastAPI()
    app.state.gave_up = False

    @app.get("/stream")
    async def stream() -> Any:
        async def gen() -> AsyncIterator[str]:
            yield "data: first\n\n"
            deadline = time.monotonic() + GUARD_S
            while not proceed.is_set():
                if time.monotonic() > deadline:
                    app.state.gave_up = True
                    break
                await asyncio.sleep(0.005)
            yield 'data: {"usage": {"completion_tokens": 2}}\n\n'

        return StreamingResponse(gen(), media_type="text/event-stream")

    seen = metered(app, gpus2, None, energy_header="x-energy-joules")
    with serve(app) as url, httpx.stream("GET", f"{url}/stream", timeout=GUARD_S) as r:
        chunks = r.iter_raw()
        first = next(chunks)
        proceed.set()  # only once the first chunk has arrived
        rest = b"".join(chunks)
    assert first == b"data: first\n\n"
    assert not app.state.gave_up
    assert rest.startswith(b"data: {")
    assert seen[0].output_tokens == 2 and seen[0].streamed


def test_the_app_reads_its_measurement_in_a_background_task(gpus2: Meter) -> None:
    app = FastAPI()
    from_task: list[RequestMeasurement] = []

    @app.get("/work")
    async def work(request: Request, tasks: BackgroundTasks) -> Any:
        tasks.add_task(lambda: from_task.append(request.state.meter_request))
        return {"ok": True}

    seen = metered(app, gpus2, None)
    with serve(app) as url:
        assert httpx.get(f"{url}/work", timeout=GUARD_S).status_code == 200
    assert from_task == seen and from_task[0].route == "/work"


def test_excluded_paths_are_not_metered(gpus2: Meter) -> None:
    app = openai_app()
    seen = metered(app, gpus2, None, exclude_paths=("/health",))
    asyncio.run(call(app, http_scope("GET", "/health")))
    asyncio.run(call(app, http_scope("GET", "/items/1")))
    assert [r.route for r in seen] == ["/items/{item_id}"]


# -- in-process: messages, exceptions, failures, other scopes -----------------------------------


def test_header_waits_for_the_body_and_leaves_the_message_alone(gpus2: Meter) -> None:
    original = start(200, b'{"a": 1}', content_type="application/json")
    headers_before = list(original["headers"])
    app = raw_app(original, body(b'{"a": 1}'))
    mw = EnergyMiddleware(app, meter=gpus2, registry=None, energy_header="x-energy-joules")
    sent = asyncio.run(call(mw, http_scope()))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert original["headers"] == headers_before  # the app's own message is not modified
    names = [name for name, _ in sent[0]["headers"]]
    assert names == [b"content-type", b"content-length", b"x-energy-joules"]
    assert sent[1]["body"] == b'{"a": 1}'


def test_the_apps_exception_propagates_unchanged_and_the_request_counts(gpus2: Meter) -> None:
    error = RuntimeError("model crashed")
    seen: list[RequestMeasurement] = []
    for app in (raw_app(raises=error), raw_app(start(200, b"x"), raises=error)):
        mw = EnergyMiddleware(
            app,
            meter=gpus2,
            registry=None,
            energy_header="x-energy-joules",
            on_measurement=lambda s, r: seen.append(r),
        )
        with pytest.raises(RuntimeError) as caught:
            asyncio.run(call(mw, http_scope()))
        assert caught.value is error
    # No response went out either time (the second start was held for the header): 5xx.
    assert [(r.status, r.status_class, r.measurement.error) for r in seen] == [
        (None, "5xx", "RuntimeError"),
        (None, "5xx", "RuntimeError"),
    ]


def test_metering_failures_never_break_a_request(
    gpus2: Meter, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()

    def bad_hook(scope: Any, r: RequestMeasurement) -> None:
        raise ValueError("hook bug")

    app = raw_app(start(200, b"ok"), body(b"ok"))
    mw = EnergyMiddleware(app, meter=gpus2, registry=registry, on_measurement=bad_hook)
    with caplog.at_level(logging.DEBUG, logger="meter"):
        for _ in range(3):
            sent = asyncio.run(call(mw, http_scope()))
            assert sent[-1]["body"] == b"ok"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "on_measurement" in warnings[0].getMessage()
    assert (
        registry.get_sample_value(
            "meter_requests_total", {"route": UNMATCHED, "method": "GET", "status": "2xx"}
        )
        == 3
    )

    def broken(request: RequestMeasurement) -> None:
        raise RuntimeError("metrics bug")

    assert mw.metrics is not None
    mw.metrics.observe = broken  # type: ignore[method-assign]
    assert asyncio.run(call(mw, http_scope()))[-1]["body"] == b"ok"
    gpus2.close()  # a closed meter: windows cannot open, requests still answer
    assert asyncio.run(call(mw, http_scope()))[-1]["body"] == b"ok"


def test_non_http_scopes_pass_straight_through(meter_factory: Callable[..., Meter]) -> None:
    m = meter_factory(300.0)
    got: list[tuple[Any, Any, Any]] = []
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append((scope, receive, send))
        if scope["type"] == "lifespan":
            received.append(await receive())
            await send({"type": "lifespan.startup.complete"})

    mw = EnergyMiddleware(app, meter=m, registry=None)

    async def run() -> tuple[list[Any], Any, Any]:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            sent.append(message)

        ws_scope = {"type": "websocket", "path": "/ws"}
        await mw(ws_scope, receive, send)
        assert got[-1] == (ws_scope, receive, send)  # the very same objects
        assert m.started_at is None
        await mw({"type": "lifespan"}, receive, send)
        return sent, receive, send

    sent, _, send = asyncio.run(run())
    assert received == [{"type": "lifespan.startup"}]
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert got[-1][2] is send
    assert m.started_at is not None  # started at the lifespan startup, in a thread


def test_no_nvml_call_on_the_request_path() -> None:
    nvml = RecordingNVML(FakeNVML([SimulatedGPU(w) for w in WATTS]))
    m = Meter(nvml=nvml, cpu=False, interval_s=0.01, idle_file="/nonexistent/idle.json")
    try:
        m.wait_ready()
        app = openai_app()
        seen = metered(app, m, CollectorRegistry(), energy_header="x-energy-joules")
        nvml.threads.clear()

        async def run() -> None:
            scope = http_scope("GET", "/items/1")
            for _ in range(50):
                await call(app, dict(scope, state={}))
                await asyncio.sleep(0.002)

        asyncio.run(run())
    finally:
        m.close()
    assert len(seen) == 50
    assert nvml.threads["meter-sampler"] > 0  # the recorder works: the sampler read meanwhile
    assert set(nvml.threads) == {"meter-sampler"}, nvml.threads


# -- defaults (what vLLM's --middleware gets) ---------------------------------------------------


def test_defaults_use_the_default_meter_and_registry(simulated_meter: Meter) -> None:
    """``app.add_middleware(EnergyMiddleware)`` alone, twice (two apps): the default meter is
    started at the lifespan startup and both count in prometheus_client's REGISTRY."""
    assert simulated_meter.started_at is None
    apps = [openai_app(), openai_app()]
    for app in apps:
        app.add_middleware(EnergyMiddleware)
    labels = {"route": "/items/{item_id}", "method": "GET", "status": "2xx"}
    try:
        with serve(apps[0]) as url0, serve(apps[1]) as url1:
            assert simulated_meter.started_at is not None
            for url in (url0, url1, url1):
                assert httpx.get(f"{url}/items/1", timeout=GUARD_S).status_code == 200
        assert REGISTRY.get_sample_value("meter_requests_total", labels) == 3
        text = generate_latest(REGISTRY).decode()
        assert 'meter_request_energy_joules_count{method="GET",route="/items/{item_id}"' in text
    finally:
        RequestMetrics.shared(REGISTRY).unregister()
    assert REGISTRY.get_sample_value("meter_requests_total", labels) is None


# -- the example --------------------------------------------------------------------------------


def test_the_example_server_reports_energy_per_request_and_per_token() -> None:
    env = {**os.environ, "METER_SIMULATE_GPUS": "300,150", "METER_NO_CPU": "1"}
    command = [sys.executable, "examples/serve_openai.py", "--load", "8", "--requests", "3"]
    proc = subprocess.run(
        [*command, "--token-s", "0.01"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("on 2 GPU(s): gpu:0 (simulated), gpu:1 (simulated)"), lines
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == {CHAT, COMPLETIONS}, lines
    for route in (CHAT, COMPLETIONS):
        method, status, requests, per_request, tokens, per_token, co2e = rows[route]
        assert (method, status, requests) == ("POST", "2xx", "12")
        assert float(per_request) > 0 and float(co2e) > 0
        assert float(per_token) == pytest.approx(
            float(per_request) * 12 / int(tokens), rel=0.01, abs=0.002
        )


# -- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "setting", "words"),
    [
        ({"max_routes": 0}, "max_routes", ">= 1"),
        ({"max_routes": 2.5}, "max_routes", "whole number"),
        ({"max_routes": True}, "max_routes", "whole number"),
        ({"buckets": []}, "buckets", "empty"),
        ({"buckets": [1.0, 1.0]}, "buckets", "increasing"),
        ({"buckets": [-1.0, 1.0]}, "buckets", "> 0"),
        ({"buckets": [1.0, math.inf]}, "buckets", "finite"),
        ({"buckets": "abc"}, "buckets", "numbers"),
        ({"energy_header": "x energy"}, "energy_header", "header name"),
        ({"energy_header": ""}, "energy_header", "header name"),
        ({"group": ""}, "group", "non-empty"),
        ({"on_measurement": 5}, "on_measurement", "callable"),
        ({"route_of": "/x"}, "route_of", "callable"),
        ({"exclude_paths": "/health"}, "exclude_paths", "collection"),
        ({"exclude_paths": ["health"]}, "exclude_paths", "'/'"),
        ({"meter": "gpu"}, "meter", "meter.Meter"),
    ],
)
def test_bad_options_fail_fast_with_a_fix(
    meter_factory: Callable[..., Meter], options: dict[str, Any], setting: str, words: str
) -> None:
    options = dict(options)
    options.setdefault("meter", meter_factory(300.0))
    with pytest.raises(ConfigError) as caught:
        EnergyMiddleware(openai_app(), registry=CollectorRegistry(), **options)
    assert caught.value.setting == setting
    assert words in str(caught.value)


def test_a_registry_holds_one_set_of_request_metrics(meter_factory: Callable[..., Meter]) -> None:
    m = meter_factory(300.0)
    registry = CollectorRegistry()
    first = EnergyMiddleware(openai_app(), meter=m, registry=registry, max_routes=10)
    second = EnergyMiddleware(openai_app(), meter=m, registry=registry, max_routes=10)
    assert first.metrics is second.metrics is not None
    with pytest.raises(ConfigError, match="max_routes=10") as caught:
        EnergyMiddleware(openai_app(), meter=m, registry=registry, max_routes=50)
    assert caught.value.setting == "registry"
    with pytest.raises(ConfigError, match="already registered") as caught:
        RequestMetrics(registry)
    assert caught.value.setting == "registry"
    with pytest.raises(ConfigError, match="app must be an ASGI"):
        EnergyMiddleware(None, meter=m)  # type: ignore[arg-type]


def test_meters_scrape_server_serves_the_request_metrics_with_also(
    meter_factory: Callable[..., Meter],
) -> None:
    """``start_http_server(meter, also=registry)``: one scrape shows the device metrics and the
    middleware's request metrics kept in ``registry``."""
    from meter.exporters.prometheus import start_http_server

    m = meter_factory(300.0)
    registry = CollectorRegistry()
    app = openai_app()
    seen = metered(app, m, registry)
    with serve(app) as url, start_http_server(m, port=0, also=registry) as server:
        reply = httpx.post(f"{url}/v1/chat/completions", json={"delay_s": 0.01}, timeout=GUARD_S)
        assert reply.status_code == 200
        deadline = time.monotonic() + GUARD_S
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = scrape(server.url.removesuffix("/metrics"))
    route = {"route": "/v1/chat/completions", "method": "POST", "status": "2xx"}
    assert sample(samples, "meter_requests_total", **route) == 1.0
    assert sample(samples, "meter_output_tokens_total", **route) == seen[0].output_tokens > 0
    energy = sample(samples, "meter_request_energy_joules_sum", **route)
    assert energy == pytest.approx(seen[0].energy_j)
    assert any(name == "meter_energy_joules_total" for name, _ in samples)

"""`EnergyMiddleware` on FastAPI apps under a real uvicorn on 127.0.0.1, on simulated GPUs.

Concurrent clients check the fair split (the requests' shares add up to the device energy over
the busy time) and ``/metrics``; message-level details (held response starts, exceptions,
non-HTTP scopes) are checked by calling the middleware in-process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from meter.exporters.prometheus import register
from meter.integrations.asgi import UNMATCHED, EnergyMiddleware, RequestMeasurement, RequestMetrics
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from meter import ConfigError, Meter
from meter.testing import FakeNVML, RecordingNVML, SimulatedGPU
from tests.integrations.asgi.apps import (
    CHAT,
    COMPLETIONS,
    GUARD_S,
    ROOT,
    WATTS,
    body,
    call,
    http_scope,
    metered,
    openai_app,
    raw_app,
    rel_err,
    sample,
    scrape,
    serve,
    start,
)

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
    # The totals counted at close are what the lazily built Measurement sums to.
    for r in requests:
        assert r.energy_j == pytest.approx(r.measurement.energy_j, rel=1e-12)
        assert r.co2e_g == pytest.approx(r.measurement.co2e_g, rel=1e-12)

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

"""The request metrics: bounded labels, one set per registry, and what scrapers see of them (a
real Prometheus running the shipped dashboard's queries, meter's own scrape server)."""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from meter.exporters.grafana import promql_expressions
from meter.exporters.prometheus import register
from meter.integrations.asgi import OTHER, UNMATCHED, EnergyMiddleware, RequestMetrics
from prometheus_client import CollectorRegistry

from meter import ConfigError, Meter
from tests.exporters.promservers import need_binary, run_prometheus
from tests.integrations.asgi.apps import (
    CHAT,
    COMPLETIONS,
    GUARD_S,
    body,
    call,
    http_scope,
    metered,
    openai_app,
    raw_get_many,
    sample,
    scrape,
    serve,
    start,
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
            with run_prometheus([url.removeprefix("http://")], scrape_interval="200ms") as prom:
                for expr in expressions:
                    prom.wait_for(expr, has_data, timeout=GUARD_S)
                routes = prom.query("sum by (route) (meter_requests_total)")
        finally:
            stop.set()
            client.join(GUARD_S)
    seen_routes = {r["metric"]["route"] for r in routes}
    assert seen_routes >= {CHAT, COMPLETIONS}
    assert "/metrics" not in seen_routes  # Prometheus' own scrapes are not metered


# -- labels -------------------------------------------------------------------------------------


def test_ten_thousand_raw_paths_stay_within_the_route_cap(gpus2: Meter) -> None:
    """10,000 distinct raw paths: a mount with a parameter (one template, whatever the names),
    the router's 404s (``unmatched``), and more distinct templates than the cap holds (the
    first ``max_routes`` seen keep their label, the rest count as ``other``)."""
    registry = CollectorRegistry()
    app = openai_app(registry)

    async def files(scope: Any, receive: Any, send: Any) -> None:
        await send(start(200, b"file"))
        await send(body(b"file"))

    async def numbered(x: str) -> Any:
        return {"x": x}

    # A mount with a parameter and a plain ASGI app inside: its template is the label, so
    # 5,000 names make one route.
    app.mount("/files/{name}", files)
    templates = [f"/r{k}/{{x}}" for k in range(40)]
    for template in templates:
        app.add_api_route(template, numbered)
    max_routes = 20
    seen = metered(app, gpus2, registry, max_routes=max_routes)

    def path(i: int) -> str:  # half mounted files, a quarter 404s, a quarter numbered routes
        if i % 2:
            return f"/files/f{i}/"
        if i % 4 == 0:
            return f"/no/such/page/{i}"
        return f"/r{(i // 4) % len(templates)}/{i}"

    paths = [path(i) for i in range(10_000)]
    with serve(app) as url:
        assert raw_get_many(url, ["/items/1"], connections=1) == [200]
        statuses = raw_get_many(url, paths)
        after = raw_get_many(url, ["/items/2", "/health", "/items/-1"], connections=1)
        records = list(seen)
        samples = scrape(url)

    assert collections.Counter(statuses) == {200: 7500, 404: 2500}
    assert after == [200, 200, 404]
    routes = collections.Counter(r.route for r in records)
    # The first request's template, then max_routes - 1 of the 41 others, then "other".
    assert routes["/items/{item_id}"] == 3
    assert routes[UNMATCHED] == 2500  # the router's 404s: never a per-path label
    sent = collections.Counter(
        "/files/{name}" if p.startswith("/files/") else f"/{p.split('/')[1]}/{{x}}"
        for p in paths
        if not p.startswith("/no/")
    )
    assert sent["/files/{name}"] == 5000 and len(sent) == len(templates) + 1
    admitted = set(routes) - {UNMATCHED, OTHER, "/items/{item_id}"}
    assert len(admitted) == max_routes - 1 and admitted <= set(sent)
    # A template admitted keeps its label from its first request on.
    assert all(routes[t] == sent[t] for t in admitted)
    # The templates left out, and /health, a real route that came after the cap was full.
    assert routes[OTHER] == sum(n for t, n in sent.items() if t not in admitted) + 1
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

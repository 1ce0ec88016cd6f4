"""The app's own ``/metrics``: answered at ``/metrics`` itself when routed (no redirect),
redirected to ``/metrics/`` when mounted (as the README says), and left unmetered by the
middleware unless told otherwise."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from meter.exporters.prometheus import metrics_asgi_app
from meter.integrations.asgi import DEFAULT_EXCLUDE_PATHS, EnergyMiddleware
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from meter import Meter
from tests.integrations.asgi.apps import GUARD_S, metered, sample, scrape, serve


def work() -> PlainTextResponse:
    return PlainTextResponse("done")


def test_a_routed_metrics_app_answers_at_metrics_on_a_real_server(gpus2: Meter) -> None:
    """The README's FastAPI setup under uvicorn: ``add_route`` serves ``/metrics`` with 200 and
    no redirect, device and request metrics on one page; the scrapes are not metered."""
    registry = CollectorRegistry(auto_describe=False)
    app = FastAPI()
    app.add_api_route("/work", work)
    seen = metered(app, gpus2, registry)
    app.add_route("/metrics", metrics_asgi_app(gpus2, also=registry))
    with serve(app) as url, httpx.Client(base_url=url, timeout=GUARD_S) as c:
        assert c.get("/work").status_code == 200
        for _ in range(5):
            scraped = c.get("/metrics")  # httpx follows no redirect unless told to
            assert scraped.status_code == 200, scraped.headers
            assert "location" not in scraped.headers
        samples = scrape(url)
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'meter_energy_joules_total{device="gpu:0"' in scraped.text
    assert [r.route for r in seen] == ["/work"]
    assert sample(samples, "meter_requests_total", route="/work", method="GET", status="2xx") == 1
    assert not [key for key in samples if ("route", "/metrics") in key[1]]
    assert gpus2.window_stats["http"].count == 1  # no scrape took a share of the energy


def test_a_starlette_route_answers_at_metrics_itself(gpus2: Meter) -> None:
    app = Starlette(routes=[Route("/metrics", metrics_asgi_app(gpus2))])
    with TestClient(app, follow_redirects=False) as client:
        got = client.get("/metrics")
        head = client.head("/metrics")
    assert got.status_code == 200 and 'meter_power_watts{device="gpu:1"' in got.text
    assert head.status_code == 200


def test_a_mount_answers_only_below_its_path(gpus2: Meter) -> None:
    """Why the README routes rather than mounts: Starlette redirects ``/metrics`` to
    ``/metrics/`` for a mount. Both paths are left unmetered by default."""
    app = FastAPI()
    seen = metered(app, gpus2, None)
    app.mount("/metrics", metrics_asgi_app(gpus2))
    with TestClient(app, follow_redirects=False) as client:
        redirected = client.get("/metrics")
        below = client.get("/metrics/")
    assert redirected.status_code == 307
    assert redirected.headers["location"].endswith("/metrics/")
    assert below.status_code == 200 and "meter_energy_joules_total" in below.text
    assert seen == []
    assert set(DEFAULT_EXCLUDE_PATHS) == {"/metrics", "/metrics/"}


def test_scrapes_are_metered_when_no_path_is_excluded(gpus2: Meter) -> None:
    app = FastAPI()
    seen = metered(app, gpus2, None, exclude_paths=())
    app.add_route("/metrics", metrics_asgi_app(gpus2))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
    assert [(r.route, r.status) for r in seen] == [("/metrics", 200)]


def test_the_defaults_leave_metrics_unmetered(gpus2: Meter) -> None:
    """vLLM's ``--middleware`` passes only ``app``: the default leaves its ``/metrics`` out."""
    app = FastAPI()
    app.add_api_route("/metrics", work)
    middleware = EnergyMiddleware(app, meter=gpus2, registry=None)
    assert middleware.exclude_paths == frozenset(DEFAULT_EXCLUDE_PATHS)
    with TestClient(middleware) as client:
        assert client.get("/metrics").text == "done"
    assert "http" not in gpus2.window_stats


def test_the_metrics_app_serves_on_its_own_with_its_lifespan(gpus2: Meter) -> None:
    """``uvicorn module:app`` with the metrics app alone: it answers the lifespan messages
    (uvicorn with ``lifespan="on"`` does not start otherwise) and serves any path."""
    app = metrics_asgi_app(gpus2)
    with serve(app) as url:
        got = httpx.get(f"{url}/", timeout=GUARD_S)
    assert got.status_code == 200 and "meter_info" in got.text

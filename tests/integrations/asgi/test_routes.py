"""Route labels are templates, joined across mounts, included routers and nested routers, and
never a raw path segment, with real Starlette and FastAPI apps (a real uvicorn for the load)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from meter.integrations.asgi import UNMATCHED, EnergyMiddleware, RequestMeasurement
from meter.integrations.asgi.routes import RouteStart, RouteTemplates
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route

from meter import Meter
from tests.integrations.asgi.apps import (
    body,
    call,
    http_scope,
    metered,
    raw_get_many,
    serve,
    start,
)


async def plain(scope: Any, receive: Any, send: Any) -> None:
    """A plain ASGI app (no router inside)."""
    await send(start(200, b"plain"))
    await send(body(b"plain"))


async def endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.url.path)


def users_app() -> FastAPI:
    """A FastAPI sub-app: ``/items/{item_id}`` and a plain Starlette route."""
    users = FastAPI()

    @users.get("/items/{item_id}")
    async def item(item_id: int) -> Any:
        return {"item": item_id}

    users.add_route("/profile", endpoint)
    return users


def routed(
    app: Any, meter: Meter, paths: Sequence[str], host: str = "test", **options: Any
) -> list[tuple[int, str]]:
    """``(status, route label)`` of each path, called in-process through the middleware."""
    seen = metered(app, meter, None, **options)

    async def run() -> list[int]:
        statuses = []
        for path in paths:
            scope = http_scope("GET", path)
            scope["headers"] = [(b"host", host.encode())]
            statuses.append((await call(app, scope))[0]["status"])
        return statuses

    statuses = asyncio.run(run())
    assert len(seen) == len(paths)
    return [(status, r.route) for status, r in zip(statuses, seen, strict=True)]


# -- the done-when: distinct users, one label ---------------------------------------------------


def test_a_thousand_users_through_a_mount_with_a_path_param_are_one_route(gpus2: Meter) -> None:
    """1,000 users under ``app.mount("/users/{user_id}", users)``, through a real uvicorn: one
    route label, the joined template, in the measurements and on /metrics; the cap untouched."""
    registry = CollectorRegistry()
    app = FastAPI()
    app.mount("/users/{user_id}", users_app())
    seen = metered(app, gpus2, registry)
    paths = [f"/users/u{n}/items/{n}" for n in range(1000)]
    with serve(app) as url:
        statuses = raw_get_many(url, paths)
    assert collections.Counter(statuses) == {200: 1000}
    template = "/users/{user_id}/items/{item_id}"
    assert collections.Counter(r.route for r in seen) == {template: 1000}
    assert registry.get_sample_value(
        "meter_requests_total", {"route": template, "method": "GET", "status": "2xx"}
    ) == pytest.approx(1000)
    series = {
        s.labels["route"]
        for family in registry.collect()
        for s in family.samples
        if s.name == "meter_requests_total"
    }
    assert series == {template}


def test_no_label_holds_a_raw_segment_whatever_the_routing(gpus2: Meter) -> None:
    """Mounts, nested mounts, included routers, plain apps, wrapped and hidden apps: 20 distinct
    values in every path parameter, and no value ever shows up in a label."""
    registry = CollectorRegistry()
    app = FastAPI()
    app.mount("/users/{user_id}", users_app())
    app.mount(
        "/orgs/{org}",
        Starlette(routes=[Mount("/teams/{team}", routes=[Route("/docs/{doc}", endpoint)])]),
    )
    app.mount("/files/{name}", plain)
    router = APIRouter(prefix="/tenants/{tenant}")

    @router.get("/jobs/{job}")
    async def job(tenant: str, job: str) -> Any:
        return {"job": job}

    app.include_router(router)
    seen = metered(app, gpus2, registry, max_routes=10)
    values = [f"v{n}x" for n in range(20)]
    paths = [
        path
        for v in values
        for path in (
            f"/users/{v}/items/7",
            f"/users/{v}/profile",
            f"/orgs/{v}/teams/{v}/docs/{v}",
            f"/files/{v}/",
            f"/tenants/{v}/jobs/{v}",
            f"/nowhere/{v}",
        )
    ]
    with serve(app) as url:
        statuses = raw_get_many(url, paths)
    assert collections.Counter(statuses) == {200: 100, 404: 20}
    labels = collections.Counter(r.route for r in seen)
    assert labels == {
        "/users/{user_id}/items/{item_id}": 20,
        "/users/{user_id}/profile": 20,
        "/orgs/{org}/teams/{team}/docs/{doc}": 20,
        "/files/{name}": 20,
        "/tenants/{tenant}/jobs/{job}": 20,
        UNMATCHED: 20,
    }
    on_metrics = {
        s.labels["route"] for family in registry.collect() for s in family.samples if s.labels
    }
    assert on_metrics == set(labels)
    assert not [label for label in on_metrics if any(v in label for v in values)]


# -- mounts, nested mounts, routers -------------------------------------------------------------


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


def test_nested_starlette_mounts_and_routers_join_their_templates(gpus2: Meter) -> None:
    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", endpoint),
            Mount(
                "/orgs/{org}",
                routes=[
                    Mount("/users/{user_id}", routes=[Route("/items/{item_id}", endpoint)]),
                    Mount("/files/{name}", app=plain),
                ],
            ),
        ]
    )
    got = routed(
        app,
        gpus2,
        [
            "/items/3",
            "/orgs/acme/users/ada/items/1",
            "/orgs/initech/users/bob/items/2",
            "/orgs/acme/files/report.pdf/",
            "/orgs/acme/users/ada/nothing",  # the innermost router's 404
            "/orgs/acme/nothing",
            "/orgs/acme/users/ada/items/1/",  # a slash redirect
            "/nothing",
        ],
    )
    assert got == [
        (200, "/items/{item_id:int}"),
        (200, "/orgs/{org}/users/{user_id}/items/{item_id}"),
        (200, "/orgs/{org}/users/{user_id}/items/{item_id}"),
        (200, "/orgs/{org}/files/{name}"),
        (404, UNMATCHED),
        (404, UNMATCHED),
        (307, UNMATCHED),
        (404, UNMATCHED),
    ]


def test_fastapi_mounts_included_routers_and_plain_routes(gpus2: Meter) -> None:
    """FastAPI records no route for its mounts and plain routes, and an included router's route
    without its prefixes: the labels are the full templates all the same."""
    inner = APIRouter()

    @inner.get("/things/{thing}")
    async def thing(thing: str) -> Any:
        return {"thing": thing}

    outer = APIRouter(prefix="/orgs/{org}")
    outer.include_router(inner, prefix="/users/{user_id}")
    app = FastAPI()
    app.include_router(outer)
    app.include_router(inner, prefix="/shared/{space}")  # the same routes under another prefix
    app.add_route("/plain/{x}", endpoint)
    app.mount("/users/{user_id}", users_app())
    app.mount("/files/{name}", plain)
    got = routed(
        app,
        gpus2,
        [
            "/orgs/acme/users/ada/things/t1",
            "/shared/s1/things/t2",
            "/plain/7",
            "/users/ada/items/1",
            "/users/ada/profile",
            "/users/ada/nothing",
            "/files/a.txt/",
        ],
    )
    assert got == [
        (200, "/orgs/{org}/users/{user_id}/things/{thing}"),
        (200, "/shared/{space}/things/{thing}"),
        (200, "/plain/{x}"),
        (200, "/users/{user_id}/items/{item_id}"),
        (200, "/users/{user_id}/profile"),
        (404, UNMATCHED),
        (200, "/files/{name}"),
    ]


def test_one_app_mounted_twice_is_labelled_by_the_mount_that_matched(gpus2: Meter) -> None:
    users = users_app()
    app = FastAPI()
    app.mount("/v1", users)
    app.mount("/v2/{region}", users)
    got = routed(app, gpus2, ["/v1/items/1", "/v2/eu/items/2", "/v1/profile", "/v2/us/profile"])
    assert got == [
        (200, "/v1/items/{item_id}"),
        (200, "/v2/{region}/items/{item_id}"),
        (200, "/v1/profile"),
        (200, "/v2/{region}/profile"),
    ]


def test_apps_behind_middleware_objects_or_hidden_keep_templated_routes(gpus2: Meter) -> None:
    """A mounted app wrapped in a middleware object is looked through (``.app``); one hidden
    in a plain function is placed by replaying the mounts: no raw segment either way."""
    inner = Starlette(routes=[Route("/docs/{doc}", endpoint)])

    async def hidden(scope: Any, receive: Any, send: Any) -> None:
        await inner(scope, receive, send)

    app = FastAPI()
    app.mount("/wrapped/{tenant}", CORSMiddleware(inner, allow_origins=["*"]))
    app.mount("/hidden/{tenant}", hidden)
    got = routed(app, gpus2, ["/wrapped/t1/docs/d1", "/hidden/t2/docs/d2", "/hidden/t3/no"])
    assert got == [
        (200, "/wrapped/{tenant}/docs/{doc}"),
        (200, "/hidden/{tenant}/docs/{doc}"),
        (404, "/hidden/{tenant}"),  # the hidden router's 404: its mount is all that shows
    ]


def test_hosts_add_no_path(gpus2: Meter) -> None:
    app = Starlette(
        routes=[
            Host("{tenant}.example.org", app=Starlette(routes=[Route("/items/{i}", endpoint)])),
            Route("/items/{i}", endpoint),
        ]
    )
    assert routed(app, gpus2, ["/items/1"], host="acme.example.org") == [(200, "/items/{i}")]


def test_a_middleware_on_a_mounted_app_labels_routes_relative_to_it(gpus2: Meter) -> None:
    users = users_app()
    seen = metered(users, gpus2, None)
    for outer in (FastAPI(), Starlette()):
        outer.mount("/users/{user_id}", users)
        asyncio.run(call(outer, http_scope("GET", "/users/ada/items/1")))
        asyncio.run(call(outer, http_scope("GET", "/users/ada/nothing")))
    assert [r.route for r in seen] == ["/items/{item_id}", UNMATCHED] * 2


def test_route_of_overrides_the_templates(gpus2: Meter) -> None:
    app = FastAPI()
    app.mount("/users/{user_id}", users_app())
    got = routed(app, gpus2, ["/users/ada/items/1"], route_of=lambda scope: "/custom")
    assert got == [(200, "/custom")]


def test_templates_without_a_router_to_search() -> None:
    """A scope whose route no router behind the middleware knows: the route's own path; a
    scope without one: None."""
    items = Route("/items/{item_id}", endpoint)
    templates = RouteTemplates(plain)
    start = RouteStart.of(http_scope("GET", "/items/1"))
    assert templates.template({**http_scope("GET", "/items/1"), "route": items}, start) == (
        "/items/{item_id}"
    )
    assert templates.template(http_scope("GET", "/items/1"), start) is None


def test_labels_stay_right_when_the_cache_starts_over(gpus2: Meter) -> None:
    """The search of each route is cached; a full cache starts over without wrong answers."""
    app = FastAPI()
    app.mount("/users/{user_id}", users_app())
    seen: list[RequestMeasurement] = []
    middleware = EnergyMiddleware(
        app, meter=gpus2, registry=None, on_measurement=lambda s, r: seen.append(r)
    )
    middleware.routes.max_cached = 1

    async def run() -> None:
        for n in range(3):
            await call(middleware, http_scope("GET", f"/users/u{n}/items/{n}"))
            await call(middleware, http_scope("GET", f"/users/u{n}/profile"))

    asyncio.run(run())
    assert [r.route for r in seen] == [
        "/users/{user_id}/items/{item_id}",
        "/users/{user_id}/profile",
    ] * 3


def test_routes_that_cannot_be_read_count_as_unmatched(
    gpus2: Meter, caplog: pytest.LogCaptureFixture
) -> None:
    class Unreadable:
        """An app whose ``routes`` raises when read."""

        @property
        def routes(self) -> Any:
            raise RuntimeError("routes bug")

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            scope["route"] = Route("/items/{item_id}", endpoint)
            await plain(scope, receive, send)

    seen: list[RequestMeasurement] = []
    middleware = EnergyMiddleware(
        Unreadable(), meter=gpus2, registry=None, on_measurement=lambda s, r: seen.append(r)
    )
    with caplog.at_level(logging.WARNING, logger="meter"):
        sent = asyncio.run(call(middleware, http_scope("GET", "/items/1")))
    assert sent[-1]["body"] == b"plain"
    assert [(r.route, r.status) for r in seen] == [(UNMATCHED, 200)]
    assert any("route template" in r.getMessage() for r in caplog.records)

"""Route templates: the ``route`` label of a request, joined across mounts, never a raw path.

What the routers leave in the scope is not enough. Starlette's router records the route that
matched in ``scope["route"]``, but each router writes over it (``Router.app`` in
starlette/routing.py): once ``Mount("/users/{user_id}", app=users)`` has matched and the router
of ``users`` has matched ``/items/{item_id}``, ``scope["route"]`` holds the inner route only, and
what the mount matched survives only as raw text appended to ``scope["root_path"]``
(``/users/42``, ``Mount.matches``). FastAPI's router sets ``scope["route"]`` for its own
``APIRoute`` only, not for mounts, and an ``APIRoute`` of an included router keeps the path it
was declared with, without the prefixes it was included under (FastAPI 0.165). A label made of
the raw text takes one value per user: a few hundred users fill the route cap, and every route
seen after that counts as ``other``.

So `RouteTemplates` rebuilds the template from the route tree of the app the middleware wraps.
The target is the route object in ``scope["route"]``, or, where no router below the middleware
recorded one (or the recorded one is a mount that handed the request on), the
``scope["endpoint"]`` that the matching route or mount put there. A search of the tree finds the
mounts and hosts that lead to the target, and their templates are joined: ``/users/{user_id}`` +
``/items/{item_id}``. The search looks through middleware objects that keep the app they wrap in
``.app`` (``app.mount("/x", CORSMiddleware(sub))``), and through FastAPI's included routers with
their prefixes (``fastapi.routing.iter_route_contexts``). It runs once per target and is cached:
a request then costs a dictionary lookup and a check that its path fits the template found,
which also tells apart the places of a target that the tree holds more than once (one app
mounted at ``/v1`` and at ``/v2/{region}``, one router included under two prefixes). A target
reached through an app that the tree does not show (hidden behind an object with neither
``routes`` nor ``app``) is placed by replaying the mounts' own ``matches`` on the request, the
choice the routers made. Mounts that stay hidden are left out of the template, never filled in
with raw text.

Templates are relative to the app the middleware wraps: a middleware added to a sub-app mounted
at ``/v2`` labels its routes ``/models/{name}``, not ``/v2/models/{name}``. None (the label
``unmatched``) means that no route matched: nothing routed the request, or the router of a
mounted app matched nothing inside it (its 404s and slash redirects).

Neither Starlette nor FastAPI is imported here: their classes are looked up in ``sys.modules``
(if no module has imported ``starlette.routing``, no Starlette route can be in a scope).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Any, NamedTuple

__all__ = ["MAX_CACHED", "MAX_DEPTH", "RouteStart", "RouteTemplates"]

Scope = MutableMapping[str, Any]

#: Nesting of mounts searched (a guard against an app mounted inside itself).
MAX_DEPTH = 16
#: Targets (and levels of routes) whose search `RouteTemplates` keeps; it starts over beyond.
MAX_CACHED = 4096
#: Places of one target told apart by their mounts; beyond that, requests are replayed.
MAX_PLACES = 16
# Middleware objects looked through to find the routes of an app.
_MAX_WRAPPERS = 16
# A path parameter of a template: ``{name}`` or ``{name:convertor}``.
_PARAM = re.compile(r"\{[^{}:]*(?::([^{}]*))?\}")


class RouteStart(NamedTuple):
    """What routing had put in the scope when the request reached the middleware."""

    route: Any
    endpoint: Any
    router: Any
    root_path: str
    path: str

    @classmethod
    def of(cls, scope: Scope) -> RouteStart:
        return cls(
            scope.get("route"),
            scope.get("endpoint"),
            scope.get("router"),
            scope.get("root_path", ""),
            scope.get("path", ""),
        )


class _Entry(NamedTuple):
    """One route as the app sees it."""

    route: Any  # the route object, as routers put it in scope["route"]
    path: str  # its template, with the prefixes of the FastAPI routers it was included under
    node: Any  # what matches a request and holds the routes inside (a FastAPI RouteContext)


class _Place(NamedTuple):
    """One place of a target in the route tree."""

    template: str | None
    pattern: re.Pattern[str]  # the request paths that reach the target there


class _Found(NamedTuple):
    """The places of one target: empty, or more than `MAX_PLACES`, to replay each request."""

    routes: Any  # the base routes and the target, kept alive so that their ids stay theirs
    target: Any
    places: tuple[_Place, ...]


class _Level(NamedTuple):
    routes: Sequence[Any]  # kept alive, and its length checked: routes added since are seen
    size: int
    entries: list[_Entry]


def _routing() -> Any:
    return sys.modules.get("starlette.routing")


def _is_node(route: Any, routing: Any) -> bool:
    """A route that hands the request on to another app: a ``Mount`` or a ``Host``."""
    return routing is not None and isinstance(route, (routing.Mount, routing.Host))


def _is_mount(route: Any, routing: Any) -> bool:
    return routing is not None and isinstance(route, routing.Mount)


def _children(app: Any) -> Sequence[Any]:
    """The routes of a mount, a host, an app or a router; looks through middleware objects that
    keep the app they wrap in ``.app`` (Starlette's own, and most others)."""
    for _ in range(_MAX_WRAPPERS):
        routes = getattr(app, "routes", None)
        if isinstance(routes, (list, tuple)) and routes:
            return routes
        app = getattr(app, "app", None)
        if app is None:
            break
    return ()


def _path(route: Any) -> str:
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else ""  # a Host has none


def _expand(routes: Sequence[Any]) -> list[_Entry]:
    """The routes of one level, FastAPI's included routers expanded with their prefixes."""
    expand = getattr(sys.modules.get("fastapi.routing"), "iter_route_contexts", None)
    if expand is not None:  # FastAPI >= 0.165 keeps included routers whole
        contexts: Iterable[Any] = expand(routes)
        return [_Entry(c.original_route, _path(c), c) for c in contexts]
    return [_Entry(r, _path(r), r) for r in routes]


def _hits(entry: _Entry, target: Any, by_endpoint: bool) -> bool:
    if not by_endpoint:
        return entry.route is target
    # The "endpoint" a route puts in the scope: its endpoint, or the app of a mount or host.
    route = entry.route
    return getattr(route, "endpoint", None) is target or getattr(route, "app", None) is target


def _join(chain: Sequence[_Entry], routing: Any) -> str | None:
    """The template of the route at the end of ``chain``, reached through the mounts and hosts
    before it; None when no path template answered."""
    if not chain:
        return None
    last = chain[-1]
    if _is_mount(last.route, routing):
        if _children(last.node):
            return None  # the mounted app's router matched nothing (its 404 or slash redirect)
    elif _is_node(last.route, routing):
        return None  # a host answered: no path template to show
    template = "".join(e.path for e in chain if _is_mount(e.route, routing))
    if not _is_mount(last.route, routing):
        template += last.path
    return template or "/"


def _pattern(chain: Sequence[_Entry], routing: Any) -> re.Pattern[str]:
    """The request paths (relative to the middleware's app) that reach the end of ``chain``
    this way: its template, with any text a parameter can take."""
    parts = []
    for entry in chain:
        if _is_mount(entry.route, routing) or entry is chain[-1]:
            template, end = entry.path, 0
            for param in _PARAM.finditer(template):
                parts.append(re.escape(template[end : param.start()]))
                parts.append(".*" if param.group(1) == "path" else "[^/]+")
                end = param.end()
            parts.append(re.escape(template[end:]))
    if _is_node(chain[-1].route, routing):
        parts.append("/.*")  # Mount.matches: the mount's path, then "/{path:path}"
    return re.compile("".join(parts))


class RouteTemplates:
    """The route templates of the requests to ``app`` (the app a middleware wraps): `template`
    is cheap after the first request of each route.

    >>> from starlette.applications import Starlette
    >>> from starlette.routing import Mount, Route
    >>> items = Route("/items/{item_id}", lambda request: None)
    >>> app = Starlette(routes=[Mount("/users/{user_id}", routes=[items])])
    >>> path = "/users/42/items/7"
    >>> start = RouteStart.of({"type": "http", "path": path})
    >>> routed = {"type": "http", "path": path, "route": items, "root_path": "/users/42"}
    >>> RouteTemplates(app).template(routed, start)
    '/users/{user_id}/items/{item_id}'
    """

    def __init__(self, app: Any, *, max_cached: int = MAX_CACHED) -> None:
        self.app = app
        self.max_cached = max_cached
        self._found: dict[tuple[int, int, bool], _Found] = {}
        self._levels: dict[int, _Level] = {}
        self._app_routes: Sequence[Any] = ()

    def template(self, scope: Scope, start: RouteStart) -> str | None:
        """The route template of the request in ``scope``, once the app has routed it, or
        None when no route matched. ``start``: `RouteStart.of` the scope as it reached the
        middleware."""
        routing = _routing()
        route = scope.get("route")
        endpoint = scope.get("endpoint")
        if (
            route is not None
            and route is not start.route
            and not (_is_node(route, routing) and endpoint is not getattr(route, "app", None))
        ):
            target, by_endpoint = route, False
        elif endpoint is not None and endpoint is not start.endpoint:
            # No route recorded below the middleware (FastAPI's mounts and plain routes), or
            # the recorded mount handed on to an app whose router did not record its route.
            target, by_endpoint = endpoint, True
        else:
            return None
        routes = self._routes(scope, start)
        if not routes:  # no router to search: a route is its own template
            return None if by_endpoint else _join((_Entry(route, _path(route), route),), routing)
        key = (id(routes), id(target), by_endpoint)
        found = self._found.get(key)
        if found is None or found.routes is not routes or found.target is not target:
            found = self._search(routes, target, by_endpoint, routing)
            if len(self._found) >= self.max_cached:
                self._found.clear()
            self._found[key] = found
        path = start.path
        if start.root_path and path.startswith(start.root_path):  # as get_route_path does
            path = path[len(start.root_path) :]
        for place in found.places:
            if place.pattern.fullmatch(path):
                return place.template
        if routing is None:
            return None
        # The target was reached through an app the tree does not show: replay the mounts.
        view = {**scope, "root_path": start.root_path, "path": start.path}
        chain = self._replay(routes, view, target, by_endpoint, routing)
        if not by_endpoint and not (chain and chain[-1].route is target):
            chain = [*chain, _Entry(route, _path(route), route)]  # then its own path
        return _join(chain, routing)

    # -- the route tree -------------------------------------------------------------------------

    def _routes(self, scope: Scope, start: RouteStart) -> Sequence[Any]:
        """The routes of the wrapped app, through its middleware; else those of the first
        router behind the middleware (when no router had routed the request before it)."""
        routes = self._app_routes
        if not routes:  # the app's own list, once it has routes (the list stays live)
            routes = self._app_routes = _children(self.app)
        if not routes and start.router is None:
            routes = _children(scope.get("router"))
        return routes

    def _entries(self, routes: Sequence[Any]) -> list[_Entry]:
        level = self._levels.get(id(routes))
        if level is None or level.routes is not routes or level.size != len(routes):
            if len(self._levels) >= self.max_cached:
                self._levels.clear()
            level = self._levels[id(routes)] = _Level(routes, len(routes), _expand(routes))
        return level.entries

    def _chains(
        self,
        routes: Sequence[Any],
        target: Any,
        by_endpoint: bool,
        routing: Any,
        above: tuple[_Entry, ...] = (),
    ) -> Iterator[tuple[_Entry, ...]]:
        """The chains of entries from ``routes`` down to ``target``, the target's entry last,
        in the order the routers try them."""
        for entry in self._entries(routes):
            if _hits(entry, target, by_endpoint):
                yield (*above, entry)
            elif (
                _is_node(entry.route, routing)
                and len(above) < MAX_DEPTH
                and all(entry.route is not e.route for e in above)
            ):
                inner = _children(entry.node)
                if inner:
                    yield from self._chains(inner, target, by_endpoint, routing, (*above, entry))

    def _search(
        self, routes: Sequence[Any], target: Any, by_endpoint: bool, routing: Any
    ) -> _Found:
        places: list[_Place] = []
        for chain in self._chains(routes, target, by_endpoint, routing):
            if len(places) == MAX_PLACES:
                return _Found(routes, target, ())
            places.append(_Place(_join(chain, routing), _pattern(chain, routing)))
        return _Found(routes, target, tuple(places))

    def _replay(
        self,
        routes: Sequence[Any],
        view: dict[str, Any],
        target: Any,
        by_endpoint: bool,
        routing: Any,
    ) -> list[_Entry]:
        """The mounts and hosts the routers went through for the request in ``view``, as deep
        as the tree shows them, then the target if they reach it: at each level the first that
        matches it fully (no plain route before it did: the target lies further on)."""
        chain: list[_Entry] = []
        while routes and len(chain) < MAX_DEPTH:
            for entry in self._entries(routes):
                hit = _hits(entry, target, by_endpoint)
                if not (hit or _is_node(entry.route, routing)):
                    continue
                try:
                    match, child = entry.node.matches(view)
                except Exception:  # a scope this route cannot read: not the one that matched
                    continue
                if hit and match is not routing.Match.NONE:
                    return [*chain, entry]
                if match is routing.Match.FULL:
                    break
            else:
                break
            chain.append(entry)
            view = {**view, **child}
            routes = _children(entry.node)
        return chain

"""Serving ``/metrics``: a scrape server (optional TLS and basic auth) and an ASGI app.

The scrape server is prometheus_client's WSGI app on its threading ``wsgiref`` server in a named
daemon thread, like ``prometheus_client.start_http_server``, with three differences: basic auth
can be required; the TLS handshake happens in the connection's own thread (a slow or hostile
client cannot stall the accept loop), with a socket timeout on every connection; and the listen
backlog is `LISTEN_BACKLOG`, not socketserver's 5, so that many scrapers at once are queued
rather than refused.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from meter.exporters.ports import DEFAULT_ADDR, DEFAULT_PORT
from meter.exporters.prometheus.collector import make_registry
from prometheus_client import make_asgi_app, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder
from prometheus_client.registry import CollectorRegistry

from meter.errors import ConfigError

if TYPE_CHECKING:
    from meter.core import Meter

log = logging.getLogger("meter")

#: Seconds a scrape connection may sit idle (TLS handshake included) before it is dropped.
CONNECTION_TIMEOUT_S = 10.0
#: Connections the kernel queues for the accept loop. socketserver's default is 5: when more
#: scrapers connect at once than the queue holds, Linux drops their SYNs (tcp_conn_request in
#: net/ipv4/tcp_input.c, counted as ListenOverflows) and each client sends its SYN again only
#: after the 1 s initial retransmission timeout (RFC 6298), then 2 s, 4 s later: a probe of 200
#: scrapers on loopback saw 147 time out and a p99 of 1,033 ms (benchmarks/bench_metrics.py
#: measures it under load). Linux caps the figure at ``net.core.somaxconn`` (4096 since kernel
#: 5.4, 128 before).
LISTEN_BACKLOG = 1024

Credentials = Mapping[str, str]
WSGIApp = Callable[..., Iterable[bytes]]


# -- basic auth ---------------------------------------------------------------------------------


def load_basic_auth(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read ``user:password`` lines (blank lines and ``#`` comments skipped) from ``path``.

    A password may also be an htpasswd SHA-1 entry (``htpasswd -s``: ``user:{SHA}base64``).
    bcrypt and MD5 (``$2y$``, ``$apr1$``) entries are refused with a message. The passwords
    are never logged; keep the file private (``chmod 600``).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the basic-auth file {p}: {exc.strerror or exc}; give a file of "
            "user:password lines",
            setting="basic_auth",
        ) from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                f"{p}, line {number}: expected user:password (the line is not shown, it may "
                "hold a password)",
                setting="basic_auth",
            )
        if password.startswith(("$2", "$apr1$", "$1$", "$5$", "$6$")):
            raise ConfigError(
                f"{p}, line {number}: user {user!r} has a hashed htpasswd entry meter cannot "
                "check (bcrypt/MD5/crypt); write user:password, or a SHA-1 entry from "
                "`htpasswd -s`",
                setting="basic_auth",
            )
        users[user] = password
    if not users:
        raise ConfigError(f"{p} holds no user:password line", setting="basic_auth")
    if os.name == "posix" and p.stat().st_mode & 0o077:
        log.warning("meter: %s is readable by other users; run `chmod 600 %s`", p, p)
    return users


def _credentials(basic_auth: tuple[str, str] | Credentials | None) -> dict[str, str] | None:
    if basic_auth is None:
        return None
    if isinstance(basic_auth, tuple):
        user, password = basic_auth
        users = {user: password}
    else:
        users = dict(basic_auth)
    if not users or any(not u or ":" in u or not p for u, p in users.items()):
        raise ConfigError(
            "basic_auth needs a non-empty user (without ':') and a non-empty password",
            setting="basic_auth",
        )
    return users


def _check_password(stored: str, given: str) -> bool:
    if stored.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(given.encode("utf-8")).digest()).decode("ascii")
        return hmac.compare_digest(stored[5:].encode("ascii", "replace"), digest.encode("ascii"))
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


def _authorized(users: Mapping[str, str], header: str | None) -> bool:
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, sep, password = decoded.partition(":")
    stored = users.get(user)
    ok = _check_password(stored, password) if stored is not None else False
    return sep == ":" and ok


def basic_auth_wsgi(app: WSGIApp, users: Mapping[str, str], realm: str = "meter") -> WSGIApp:
    """Wrap a WSGI app so that it answers 401 unless the request carries valid credentials."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _authorized(users, environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"401 Unauthorized: this /metrics endpoint requires basic auth\n"]

    return wrapped


# -- the scrape server --------------------------------------------------------------------------


#: A rendered exposition is served again, while nothing it shows has changed, for at most this
#: long (a clock-driven figure, such as the amortised embodied CO2e, moves on at least this
#: often), so a crowd of scrapers costs one render per change instead of one each.
RENDER_REUSE_S = 1.0


def meter_version(meter: Meter) -> Callable[[], object]:
    """What a rendered page of ``meter``'s metrics depends on, cheaply: the sampler's ticks (the
    exported figures move on at each) and the windows added to the per-name totals. Equal
    versions mean the same page, give or take a window boundary's read between two ticks."""
    sampler = meter.sampler

    def version() -> object:
        return (sampler.ticks, meter.windows_accounted)

    return version


class CachedMetricsApp:
    """prometheus_client's WSGI app (``make_wsgi_app``) with the rendering shared: a scrape
    reuses the page rendered for the same format and encoding while ``version()`` is unchanged
    and for at most ``reuse_s``, and concurrent scrapes of a stale page wait for one render.
    Anything unusual (a query such as ``name[]=``, a method other than GET, ``/favicon.ico``)
    goes to the plain app."""

    def __init__(
        self,
        registry: CollectorRegistry,
        version: Callable[[], object],
        reuse_s: float = RENDER_REUSE_S,
    ) -> None:
        self.registry = registry
        self.version = version
        self.reuse_s = reuse_s
        self._plain = make_wsgi_app(registry)
        self._lock = threading.Lock()
        self._pages: dict[tuple[str, bool], tuple[float, object, bytes]] = {}
        #: Renders done (for tests and benchmarks).
        self.renders = 0

    def _fresh(self, hit: tuple[float, object, bytes] | None) -> bool:
        return (
            hit is not None
            and time.monotonic() - hit[0] <= self.reuse_s
            and hit[1] == self.version()
        )

    def page(self, accept: str, gzipped: bool) -> tuple[str, bytes]:
        """(content type, body) for a scrape: rendered again only when something changed."""
        encoder, content_type = choose_encoder(accept)
        key = (content_type, gzipped)
        hit = self._pages.get(key)
        if not self._fresh(hit):
            with self._lock:  # one render; the scrapes that queued behind it reuse it
                hit = self._pages.get(key)
                if not self._fresh(hit):
                    t, version = time.monotonic(), self.version()
                    body = encoder(self.registry)
                    if gzipped:
                        body = gzip.compress(body)
                    self.renders += 1
                    hit = self._pages[key] = (t, version, body)
        assert hit is not None
        return content_type, hit[2]

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") != "GET"
            or environ.get("QUERY_STRING")
            or environ.get("PATH_INFO") == "/favicon.ico"
        ):
            return self._plain(environ, start_response)
        gzipped = "gzip" in (environ.get("HTTP_ACCEPT_ENCODING") or "")
        content_type, body = self.page(environ.get("HTTP_ACCEPT") or "", gzipped)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]


class _QuietHandler(WSGIRequestHandler):
    """No access log (a scrape every few seconds would flood stderr)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-request server (daemon threads), with a deep listen
    queue, TLS in the connection's thread and a timeout on every connection."""

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(CONNECTION_TIMEOUT_S)
        context = self.ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        try:
            tls = context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("meter: TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("meter: /metrics request from %s failed", client_address, exc_info=True)


def _ssl_context(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {certfile} / key {keyfile}: {exc}; give a PEM "
            "certificate (--tls-cert) and its unencrypted PEM private key (--tls-key)",
            setting="tls",
        ) from None
    return context


class MetricsServer:
    """A running scrape server (from `start_http_server`). ``close()`` stops it (idempotent).

    ``port`` is the bound port (useful with ``port=0``); ``url`` the ``/metrics`` URL.
    """

    def __init__(self, httpd: _ThreadingServer, thread: threading.Thread, scheme: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.scheme = scheme
        address = httpd.server_address
        self.addr: str = str(address[0])
        self.port: int = int(address[1])
        self._closed = False
        self._lock = threading.Lock()
        #: The WSGI app serving the scrapes (a `CachedMetricsApp`, possibly behind basic auth).
        self.app: Any = httpd.get_app()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{self.scheme}://{host}:{self.port}/metrics"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}{' closed' if self._closed else ''}>"


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr == "localhost"


def start_http_server(
    meter: Meter,
    port: int = DEFAULT_PORT,
    addr: str = DEFAULT_ADDR,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    basic_auth: tuple[str, str] | Credentials | None = None,
    include_windows: bool = True,
    also: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``meter``'s metrics at ``http://addr:port/metrics`` from a daemon thread.

    ``certfile``/``keyfile``: PEM files to serve HTTPS. ``basic_auth``: ``(user, password)``
    or a mapping of users to passwords (see `load_basic_auth`). ``port=0`` picks a free port
    (read it from ``.port``). ``also``: another registry served too, e.g.
    ``prometheus_client.REGISTRY`` with the ASGI middleware's request metrics. Starts the meter.
    Returns a `MetricsServer`; ``close()`` stops it.

    >>> server = start_http_server(meter.get_meter(), port=10144)   # doctest: +SKIP
    >>> server.url                                                   # doctest: +SKIP
    'http://127.0.0.1:10144/metrics'
    """
    if keyfile is not None and certfile is None:
        raise ConfigError("a TLS key was given without its certificate (certfile)", setting="tls")
    context = _ssl_context(certfile, keyfile) if certfile is not None else None
    users = _credentials(basic_auth)
    registry = make_registry(meter, include_windows=include_windows, also=also)
    app: WSGIApp = CachedMetricsApp(registry, meter_version(meter))
    if users is not None:
        app = basic_auth_wsgi(app, users)
        if context is None and not _is_loopback(addr):
            log.warning(
                "meter: basic auth without TLS on %s sends the password in clear text; "
                "add --tls-cert/--tls-key",
                addr,
            )
    return _serve(_listen(app, addr, port, context))


def _listen(app: WSGIApp, addr: str, port: int, context: ssl.SSLContext | None) -> _ThreadingServer:
    """A server bound and listening on ``addr:port``: from here on the kernel queues connections
    (up to `LISTEN_BACKLOG`), but nothing accepts them before `_serve`."""
    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot bind to {addr!r}: {exc.strerror}", setting="addr") from None
    family, _, _, _, sockaddr = infos[0]

    class Server(_ThreadingServer):
        address_family = family

    try:
        httpd = make_server(str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {addr}:{port}: {exc.strerror or exc}; choose another port "
            "(--port) or stop what is using it",
            setting="port",
        ) from None
    httpd.ssl_context = context
    return httpd


def _serve(httpd: _ThreadingServer) -> MetricsServer:
    """Run the accept loop of a listening server in a named daemon thread."""
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="meter-metrics", daemon=True
    )
    thread.start()
    return MetricsServer(httpd, thread, "https" if httpd.ssl_context is not None else "http")


# -- ASGI ---------------------------------------------------------------------------------------

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsASGIApp:
    """An ASGI app serving a registry's metrics (prometheus_client's ``make_asgi_app``) on
    whatever path routes to it; from `metrics_asgi_app`.

    It is a class, not a function, so that Starlette takes it for an ASGI app wherever an
    endpoint goes: ``Route("/metrics", app)`` and FastAPI's ``add_route("/metrics", app)``
    serve ``/metrics`` itself. A mount serves only below its path: Starlette's router answers
    ``/metrics`` with a 307 redirect to ``/metrics/`` (``Mount`` matches
    ``/metrics/{path:path}``, and ``Router.redirect_slashes`` finds that ``/metrics/`` would
    match). Served on its own (``uvicorn module:app``), it answers the lifespan messages.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._app: Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]] = make_asgi_app(
            registry
        )

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._app(scope, receive, send)
        elif kind == "lifespan":  # nothing to start or stop
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        # A websocket is not answered: the server closes it (403).

    def __repr__(self) -> str:
        return f"<MetricsASGIApp {self.registry!r}>"


def metrics_asgi_app(
    meter: Meter, *, include_windows: bool = True, also: CollectorRegistry | None = None
) -> MetricsASGIApp:
    """An ASGI app serving ``meter``'s metrics, to route to inside an inference server.

    >>> from fastapi import FastAPI                                        # doctest: +SKIP
    >>> app = FastAPI()                                                   # doctest: +SKIP
    >>> app.add_route("/metrics", metrics_asgi_app(meter.get_meter()))    # doctest: +SKIP

    Route it (Starlette: ``Route("/metrics", metrics_asgi_app(m))``) rather than mount it: a
    mount at ``/metrics`` answers ``/metrics`` with a redirect to ``/metrics/`` (see
    `MetricsASGIApp`). `meter.integrations.asgi.EnergyMiddleware` leaves ``/metrics`` unmetered
    by default.

    ``also``: another registry whose metrics are served too, e.g. ``prometheus_client.REGISTRY``
    where `meter.integrations.asgi.EnergyMiddleware` keeps the request metrics by default.

    The scrape is rendered on the event loop, which is fine: it reads floats, never a device.
    """
    return MetricsASGIApp(make_registry(meter, include_windows=include_windows, also=also))

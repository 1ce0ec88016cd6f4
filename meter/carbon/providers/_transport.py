"""The requests and urllib3 plumbing behind `HttpClient`, imported on the first request (never
when only the embedded table or a constant is used).

* `BoundedRetry`: urllib3's `Retry` with meter's limits. Retries connect errors, read errors,
  429 and 5xx up to ``total``; waits the backoff 0.25 s, 0.5 s, ... at most 2 s, or the
  server's ``Retry-After``; stops at once when that ``Retry-After`` is over the cap or when the
  next attempt could not start before the lookup's deadline.
* `BoundedAdapter`: an `HTTPAdapter` whose connection pools count each attempt and hand every
  socket to the running `Lookup`, whose watchdog shuts it down at the deadline.

Everything here reads the running lookup from `current_lookup()`: urllib3 makes its attempts,
waits and reads in the calling thread, inside `HttpClient.get_json`.
"""

from __future__ import annotations

import http.client
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ResponseError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util.retry import Retry

from meter.carbon.providers.http import _retry_after_s, current_lookup

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse, HTTPResponse

#: What a request may raise: requests' errors, and urllib3's should one get through.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (requests.RequestException, HTTPError)
#: What reading a streamed body may raise.
READ_ERRORS: tuple[type[BaseException], ...] = (
    HTTPError,
    OSError,
    http.client.HTTPException,
    requests.RequestException,
)
#: 429 and every 5xx are retried (a proxy's 502 page included), as far as ``total`` allows.
RETRY_STATUSES = frozenset({429, *range(500, 600)})


def failure_kind(exc: BaseException) -> str | None:
    """``timeout`` or ``connection`` for a failed request or read, else None."""
    reason: BaseException = exc
    first = exc.args[0] if exc.args else None
    if isinstance(first, MaxRetryError) and first.reason is not None:
        reason = first.reason
    elif isinstance(exc, MaxRetryError) and exc.reason is not None:
        reason = exc.reason
    if isinstance(reason, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "connection"
    if isinstance(reason, (Urllib3TimeoutError, requests.Timeout, socket.timeout)):
        return "timeout"
    if isinstance(reason, (ProtocolError, OSError, requests.ConnectionError)):
        return "connection"
    return None


class BoundedRetry(Retry):
    """urllib3's `Retry`, bounded by ``max_retry_after_s`` and the running lookup's deadline."""

    #: meter's backoff: 0.25 s before the first retry, doubling, at most 2 s. (urllib3's own
    #: formula waits nothing before the first retry.)
    BACKOFF_FIRST_S = 0.25
    BACKOFF_MAX_S = 2.0

    def __init__(self, *args: Any, max_retry_after_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after_s = max_retry_after_s

    def new(self, **kw: Any) -> Self:
        kw.setdefault("max_retry_after_s", self.max_retry_after_s)
        return super().new(**kw)

    def get_backoff_time(self) -> float:
        failures = len(self.history)
        if failures == 0:
            return 0.0
        return float(min(self.BACKOFF_MAX_S, self.BACKOFF_FIRST_S * 2 ** (failures - 1)))

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        # urllib3 reads whole seconds or an HTTP date and raises on anything else ("1.5").
        return _retry_after_s(response.headers.get("Retry-After"))

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        wait = None
        if response is not None and self.respect_retry_after_header:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        lookup = current_lookup()
        if lookup is not None:
            wait = min(wait, max(0.0, lookup.remaining()))
        if wait > 0:
            time.sleep(wait)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        stop = self._stop_reason(retry, response)
        if stop is None:
            return retry
        lookup = current_lookup()
        if lookup is not None:
            lookup.stop_reason = stop
        # As urllib3 does when retries run out: for a response, urlopen returns it
        # (raise_on_status=False) and the client words the failure; for an error it is raised.
        reason = error or ResponseError(stop)
        raise MaxRetryError(_pool, url, reason) from reason  # type: ignore[arg-type]

    def _stop_reason(self, retry: BoundedRetry, response: BaseHTTPResponse | None) -> str | None:
        wait = None
        if response is not None and self.respect_retry_after_header:
            wait = self.get_retry_after(response)
        if wait is not None and wait > self.max_retry_after_s:
            return (
                f"Retry-After {wait:g} s is over the {self.max_retry_after_s:g} s this lookup "
                "may wait"
            )
        lookup = current_lookup()
        if lookup is None:
            return None
        pause = wait if wait is not None else retry.get_backoff_time()
        if lookup.remaining() <= pause:
            return f"no time left for another attempt within the {lookup.deadline_s:g} s deadline"
        return None


# -- connections that the deadline can cut -----------------------------------------------------


def _bound_connect(conn: HTTPConnection) -> None:
    """A connect may not outlast the deadline: its socket is not the watchdog's yet."""
    lookup = current_lookup()
    if lookup is None:
        return
    remaining = lookup.remaining()
    if remaining <= 0:
        raise ConnectTimeoutError(conn, "the lookup's deadline has passed")
    if isinstance(conn.timeout, (int, float)):
        conn.timeout = min(conn.timeout, remaining)


def _watch(conn: HTTPConnection) -> None:
    lookup = current_lookup()
    if lookup is not None and conn.sock is not None:
        lookup.watch(conn.sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _bound_connect(self)
        super().connect()

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's own
        _watch(self)  # the request is sent; the status line, headers and body are read next
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _bound_connect(self)
        super().connect()

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3's own
        _watch(self)
        return super().getresponse()


def _start_attempt(pool: HTTPConnectionPool, url: str) -> None:
    lookup = current_lookup()
    if lookup is None:
        return
    if lookup.expired:
        reason = ConnectTimeoutError(pool, "the lookup's deadline has passed")
        raise MaxRetryError(pool, url, reason)
    lookup.attempts += 1


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    # urllib3 calls urlopen again for each retry: one call, one attempt.
    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> BaseHTTPResponse:
        _start_attempt(self, url)
        return super().urlopen(method, url, *args, **kwargs)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> BaseHTTPResponse:
        _start_attempt(self, url)
        return super().urlopen(method, url, *args, **kwargs)


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class BoundedAdapter(HTTPAdapter):
    """`HTTPAdapter` whose pools (direct, or through an HTTP proxy) use the watched
    connections above."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS proxies keep urllib3's own pools
            manager.pool_classes_by_scheme = _POOLS
        return manager


def bounded_adapter(retries: int, max_retry_after_s: float) -> BoundedAdapter:
    retry = BoundedRetry(
        total=retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        redirect=False,  # never followed (requests is told allow_redirects=False as well)
        raise_on_status=False,  # the last 429/5xx comes back, for the client to word
        max_retry_after_s=max_retry_after_s,
    )
    return BoundedAdapter(max_retries=retry)


def new_session(user_agent: str) -> Any:
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    return session


class _QuietDuringLookups(logging.Filter):
    """urllib3 warns on each retry after a connection error ("Retrying (...) after connection
    broken by ..."). In a meter lookup that is one attempt of a few, and `FallbackChain` warns
    once when they all fail, so during a lookup the warning is demoted to debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and current_lookup() is not None:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_QuietDuringLookups())

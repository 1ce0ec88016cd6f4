"""Bounded GETs of JSON: the HTTP behaviour every live provider shares.

A live API that is slow, broken or hostile may delay the fallback to the embedded table by
seconds; it must never hang a run or fill its memory. So every lookup is bounded three ways:

* **Attempts.** Short connect and read timeouts (``timeout_s`` each). At most ``retries`` more
  attempts after a timeout, a connection error, a 429 or a 5xx, after a backoff (0.25 s, 0.5 s,
  ... at most 2 s) or the server's ``Retry-After`` when that is at most ``max_retry_after_s``
  (5 s); a longer ``Retry-After`` fails now, with ``retry_after_s`` set so that the cache holds
  the failure that long. These are urllib3's `Retry` on a `requests` session (`_transport`).
* **Time.** One deadline per lookup, ``deadline_s`` (10 s), over every request, attempt,
  wait and read a provider's ``intensity()`` makes. Socket timeouts alone bound nothing: "timeout
  is not a time limit on the entire response download" but on each wait for bytes (requests'
  docs, Timeouts), so a server that sends a byte a second never lets one expire. At the deadline
  the lookup's sockets are shut down, which ends any read blocked on them.
* **Size.** The answer is streamed and reading stops, with a ``too-large`` error, as soon as it
  is over ``max_response_bytes`` (1 MB, counted after any gzip decoding); a ``Content-Length``
  over the cap fails before the body is read. Error pages are read up to 4 KiB for a hint.

Set ``deadline_s`` and ``max_response_bytes`` on a live provider, or through
``provider_from_env`` with ``METER_CARBON_DEADLINE_S`` and ``METER_CARBON_MAX_RESPONSE_BYTES``.

Also: 401/403 fail at once (no retry), saying which setting to check. Redirects are not
followed: a custom auth header (Electricity Maps' ``auth-token``) would be sent on to wherever
the redirect points. A body that is not JSON (an HTML error page, a truncated document) is a
``malformed response``. Every reason is scrubbed of the registered secrets. ``requests`` is
imported on the first request, so building a provider opens and imports nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import timezone
from typing import Any

from meter.carbon.providers.base import (
    ProviderError,
    _check_count,
    _check_positive,
    _check_retries,
    _check_url,
)

log = logging.getLogger("meter")

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
#: Longest ``Retry-After`` a lookup waits out; a longer one fails now (and is cached that long).
MAX_RETRY_AFTER_S = 5.0
#: Longest a provider's ``intensity()`` spends on the network, every attempt and wait included.
DEFAULT_DEADLINE_S = 10.0
#: Largest answer read (after gzip decoding): the APIs' answers are a few kB.
DEFAULT_MAX_RESPONSE_BYTES = 1_000_000
#: How much of an error page is read for a hint (its ``<title>`` or JSON ``error``).
_ERROR_PAGE_BYTES = 4096
_CHUNK_BYTES = 64 * 1024
_USER_AGENT = "ai-energy-meter (carbon intensity lookup)"


# -- the deadline ------------------------------------------------------------------------------

_CURRENT: contextvars.ContextVar[Lookup | None] = contextvars.ContextVar(
    "meter_carbon_lookup", default=None
)


def current_lookup() -> Lookup | None:
    """The lookup running in this thread, if any (read by the urllib3 hooks in `_transport`)."""
    return _CURRENT.get()


class Lookup:
    """One lookup's time budget: ``deadline_s`` from now, over every request it makes.

    The transport registers each socket the lookup reads from (`watch`); when the deadline
    passes, a watchdog timer shuts them down, so a read blocked on a trickling server returns
    at once (and `cut` tells the reader why its data ended). The timer starts with the first
    socket: a lookup that fails before any request starts no thread.
    """

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._deadline = time.monotonic() + deadline_s
        #: Requests started (urllib3 attempts, retries included), counted by the transport.
        self.attempts = 0
        #: Why the transport stopped retrying early (a long Retry-After, the deadline), if it did.
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self._cut = False
        self._closed = False

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    @property
    def expired(self) -> bool:
        return self._cut or self.remaining() <= 0

    @property
    def cut(self) -> bool:
        """True once the watchdog has shut the lookup's sockets down."""
        return self._cut

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has)."""
        with self._lock:
            if self._closed:
                return
            if not self._cut:
                self._sockets.append(sock)
                if self._timer is None:
                    self._timer = threading.Timer(max(0.0, self.remaining()), self._expire)
                    self._timer.name = "meter-carbon-deadline"
                    self._timer.daemon = True
                    self._timer.start()
                return
        _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._cut = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)

    def close(self) -> None:
        """Stop the watchdog (idempotent); sockets are no longer this lookup's business."""
        with self._lock:
            self._closed = True
            self._sockets.clear()
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            timer.join()


def _shutdown(sock: socket.socket) -> None:
    # shutdown(), not close(): on Linux, closing a descriptor does not interrupt a recv()
    # blocked on it in another thread (close(2), NOTES); shutdown(SHUT_RDWR) makes that recv()
    # return at once. urllib3's own HTTPResponse.shutdown() relies on the same.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# -- the client --------------------------------------------------------------------------------


class HttpClient:
    """GET JSON for one provider, bounded as the module says; one per provider instance.

    ``session``: a `requests.Session` to use instead of one of its own; meter's adapter
    (retries, the deadline watch) is mounted on it for ``base_url`` only.
    """

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        auth_hint: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        session: Any = None,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.provider = provider
        self.base_url = _check_url(base_url)
        self.timeout_s = _check_positive(timeout_s, "timeout_s")
        self.retries = _check_retries(retries)
        self.max_retry_after_s = _check_positive(
            max_retry_after_s, "max_retry_after_s", allow_zero=True
        )
        self.deadline_s = _check_positive(deadline_s, "deadline_s")
        self.max_response_bytes = _check_count(max_response_bytes, "max_response_bytes")
        self.auth_hint = auth_hint
        self._session = session
        self._own_session = session is None
        self._mounted = False
        self._session_lock = threading.Lock()
        self._secrets: list[str] = []
        self._tokens: deque[str] = deque(maxlen=8)  # short-lived tokens (WattTime logins)

    # secrets ---------------------------------------------------------------------------------

    def add_secret(self, value: str, *, short_lived: bool = False) -> None:
        if len(value) < 3:  # scrubbing a one- or two-letter "secret" would mangle every message
            return
        if short_lived:
            self._tokens.append(value)
        else:
            self._secrets.append(value)

    def scrub(self, text: str) -> str:
        for secret in (*self._secrets, *self._tokens):
            text = text.replace(secret, "***")
        return text

    def error(self, reason: str, **fields: Any) -> ProviderError:
        return ProviderError(self.scrub(reason), provider=self.provider, **fields)

    def malformed(self, what: str) -> ProviderError:
        return self.error(f"malformed response: {what}", kind="malformed")

    # the session -----------------------------------------------------------------------------

    def session(self) -> Any:
        with self._session_lock:
            if self._session is None or not self._mounted:
                from meter.carbon.providers import _transport

                if self._session is None:
                    self._session = _transport.new_session(_USER_AGENT)
                adapter = _transport.bounded_adapter(self.retries, self.max_retry_after_s)
                self._session.mount(self.base_url + "/", adapter)
                self._mounted = True
            return self._session

    def close(self) -> None:
        with self._session_lock:
            if self._own_session and self._session is not None:
                self._session.close()
                self._session = None
                self._mounted = False

    # the lookup ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lookup(self) -> Iterator[Lookup]:
        """The deadline for one ``intensity()``: every `get_json` inside shares it. Nested,
        the outer lookup's deadline holds."""
        outer = _CURRENT.get()
        if outer is not None:
            yield outer
            return
        lookup = Lookup(self.deadline_s)
        token = _CURRENT.set(lookup)
        try:
            yield lookup
        finally:
            _CURRENT.reset(token)
            lookup.close()

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        with self.lookup() as lookup:
            return self._get_json(lookup, path, params, headers, auth)

    def _get_json(
        self,
        lookup: Lookup,
        path: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> Any:
        from meter.carbon.providers import _transport

        if lookup.expired:
            raise self._deadline(lookup, 0)
        session = self.session()
        first_attempt = lookup.attempts
        lookup.stop_reason = None
        timeout = min(self.timeout_s, max(lookup.remaining(), 0.001))
        try:
            response = session.get(
                self.base_url + path,
                params=params,
                headers=dict(headers or {}),
                auth=auth,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
            )
        except _transport.REQUEST_ERRORS as exc:
            raise self._failed(exc, lookup, lookup.attempts - first_attempt) from None
        with response:
            attempts = lookup.attempts - first_attempt
            log.debug("meter: %s %s: HTTP %s", self.provider, path, response.status_code)
            return self._answer(response, lookup, attempts)

    def _failed(self, exc: BaseException, lookup: Lookup, attempts: int) -> ProviderError:
        """The error for a request that got no response, retries spent."""
        from meter.carbon.providers import _transport

        if lookup.expired:
            return self._deadline(lookup, attempts)
        kind = _transport.failure_kind(exc)
        if kind == "timeout":
            failure = f"timed out after {self.timeout_s:g} s"
        elif kind == "connection":
            failure = f"connection failed ({_cause(exc)})"
        else:
            return self.error(f"request failed ({type(exc).__name__})", kind="http")
        if lookup.stop_reason:
            failure = f"{failure}; {lookup.stop_reason}"
        return self.error(failure + _attempts(attempts), kind=kind)

    def _answer(self, response: Any, lookup: Lookup, attempts: int) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            return self._decode(response, self._read(response, lookup, attempts))
        if status in (401, 403):
            word = "unauthorized" if status == 401 else "forbidden"
            raise self.error(
                f"HTTP {status} {word}: check {self.auth_hint}", kind="auth", status=status
            )
        if status == 429 or status >= 500:
            # urllib3 retried these as far as allowed; this is the last answer.
            wait = _retry_after_s(response.headers.get("Retry-After"))
            if status == 429:
                failure, kind = "rate limited (HTTP 429)", "rate-limited"
            else:
                failure, kind = f"server error (HTTP {status})", "server"
            if wait is not None and wait > self.max_retry_after_s:
                raise self.error(
                    f"{failure}: Retry-After {wait:g} s is over the "
                    f"{self.max_retry_after_s:g} s this lookup may wait",
                    kind=kind,
                    status=status,
                    retry_after_s=wait,
                )
            if lookup.stop_reason:
                raise self.error(
                    f"{failure}: {lookup.stop_reason}{_attempts(attempts)}",
                    kind=kind,
                    status=status,
                    retry_after_s=wait,
                )
            raise self.error(failure + _attempts(attempts), kind=kind, status=status)
        # 3xx (not followed) and the other 4xx: retrying will not help.
        page = self._read(response, lookup, attempts, limit=_ERROR_PAGE_BYTES)
        raise self.error(f"HTTP {status}{_detail(page)}", kind="http", status=status)

    def _read(self, response: Any, lookup: Lookup, attempts: int, limit: int = 0) -> bytes:
        """The body, streamed: at most ``max_response_bytes`` (a `ProviderError` beyond), or
        with ``limit`` the first ``limit`` bytes of an error page (never an error)."""
        from meter.carbon.providers import _transport

        hint_only = limit > 0
        cap = limit if hint_only else self.max_response_bytes
        declared = _content_length(response)
        if not hint_only and declared is not None and declared > cap:
            raise self._too_large(response.status_code, f"it declares {declared} bytes")
        raw = response.raw
        # read1 returns what one recv gave, so the deadline is looked at between arrivals;
        # read(amt), all an older urllib3 2.x has, waits for amt bytes (the watchdog still cuts
        # it short). Each read decodes at most amt bytes of gzip from urllib3 2.6.0 on; before,
        # a small read could inflate far more (GHSA-2xpw-w6gg-jr37), caught after the read.
        read = getattr(raw, "read1", raw.read)
        parts: list[bytes] = []
        size = 0
        try:
            while size <= cap and not lookup.expired:
                chunk = read(min(_CHUNK_BYTES, cap + 1 - size), decode_content=True)
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
        except _transport.READ_ERRORS as exc:
            if hint_only and not lookup.cut:
                return b"".join(parts)
            if not lookup.expired:
                kind = _transport.failure_kind(exc) or "connection"
                what = f"timed out after {self.timeout_s:g} s" if kind == "timeout" else "failed"
                raise self.error(
                    f"reading the answer {what} ({type(exc).__name__})",
                    kind=kind,
                    status=response.status_code,
                ) from None
        if hint_only:
            return b"".join(parts)[:cap]
        # A body the watchdog cut can look complete (no Content-Length: read until close).
        if lookup.expired:
            raise self._deadline(lookup, attempts)
        if size > cap:
            raise self._too_large(response.status_code, f"stopped reading at {size} bytes")
        return b"".join(parts)

    def _decode(self, response: Any, body: bytes) -> Any:
        status = response.status_code
        ctype = str(response.headers.get("Content-Type", "")).lower()
        if "html" in ctype or body.lstrip()[:1] == b"<":
            raise self.error(
                f"malformed response (HTTP {status}): an HTML page, not JSON"
                f"{_detail(body[:_ERROR_PAGE_BYTES])}",
                kind="malformed",
                status=status,
            )
        try:
            return json.loads(body)
        except ValueError as exc:  # UnicodeDecodeError included
            raise self.error(
                f"malformed response (HTTP {status}): not valid JSON ({exc})",
                kind="malformed",
                status=status,
            ) from None

    def _too_large(self, status: int, what: str) -> ProviderError:
        return self.error(
            f"answer over the {self.max_response_bytes} byte size cap ({what}); raise "
            "max_response_bytes= (METER_CARBON_MAX_RESPONSE_BYTES) if the API's answers are "
            "really this large",
            kind="too-large",
            status=status,
        )

    def _deadline(self, lookup: Lookup, attempts: int) -> ProviderError:
        return self.error(
            f"no complete answer within the {lookup.deadline_s:g} s deadline for a lookup"
            f"{_attempts(attempts)}; raise deadline_s= (METER_CARBON_DEADLINE_S) if the API is "
            "slow but working",
            kind="timeout",
        )


# -- helpers -----------------------------------------------------------------------------------


def _attempts(count: int) -> str:
    return f", {count} attempts" if count > 1 else ""


def _content_length(response: Any) -> int | None:
    value = str(response.headers.get("Content-Length", "")).strip()
    return int(value) if value.isdigit() else None


def _retry_after_s(header: str | None) -> float | None:
    """``Retry-After``: delay seconds or an HTTP date (RFC 9110 10.2.3); None when absent."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _cause(exc: BaseException) -> str:
    """A short cause for a connection error: ``[Errno 111] Connection refused``, or the type."""
    match = re.search(r"\[Errno -?\d+\][^)'\"]*", str(exc))
    return match.group(0).strip() if match else type(exc).__name__


def _detail(page: bytes) -> str:
    """A short hint from an error body: an HTML ``<title>``, or a JSON ``error``/``message``."""
    text = page.decode("utf-8", errors="replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        hint = title.group(1)
    else:
        try:
            body = json.loads(text)
        except ValueError:
            return ""
        hint = ""
        if isinstance(body, dict):
            for key in ("error", "message", "detail"):
                if isinstance(body.get(key), str):
                    hint = body[key]
                    break
    hint = " ".join(hint.split())[:120]
    return f" ({hint})" if hint else ""

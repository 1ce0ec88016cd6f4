"""Pushgateway support for batch jobs: periodic pushes and a final push at the end.

Every push replaces the job's group on the gateway (HTTP PUT) with the meter's metrics, whose
counters are cumulative since the meter started: so successive pushes of one run only ever go
up, and Prometheus (scraping the gateway with ``honor_labels: true``) sees proper counters.
A new run with the same grouping key starts again from 0, which Prometheus reads as a counter
reset, as it should.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from meter.exporters.prometheus.collector import make_registry
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway

from meter.errors import ConfigError

if TYPE_CHECKING:
    from meter.core import Meter

log = logging.getLogger("meter")

#: Default seconds between periodic pushes (a typical scrape interval of the gateway).
DEFAULT_PUSH_INTERVAL_S = 15.0


def default_grouping_key(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"instance": hostname}``, plus ``rank`` from ``RANK`` when set (torchrun, SLURM via
    the launcher), so the ranks of one job do not overwrite each other on the gateway."""
    env = os.environ if environ is None else environ
    key = {"instance": socket.gethostname()}
    rank = env.get("RANK", "").strip()
    if rank:
        key["rank"] = rank
    return key


def _redact(url: str) -> str:
    """The URL without any ``user:password@`` in it, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _stop(event: threading.Event, thread: threading.Thread) -> None:
    event.set()
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=5.0)


class Pusher:
    """Push a meter's metrics to a Prometheus Pushgateway, periodically and at the end.

    >>> pusher = Pusher(meter.get_meter(), "http://pushgateway:9091", job="train")  # doctest: +SKIP
    >>> pusher.start()          # a push every interval_s, from a daemon thread  # doctest: +SKIP
    >>> ...                     # the batch job                                    # doctest: +SKIP
    >>> pusher.close()          # stops the thread and pushes the final values     # doctest: +SKIP

    ``grouping_key`` defaults to `default_grouping_key` (instance, and rank under torchrun).
    ``basic_auth``: ``(user, password)``. Periodic pushes that fail are logged (the URL without
    credentials) and kept in ``last_error``; they never raise into the job. ``push_now()``
    raises, for callers who want to know.
    """

    def __init__(
        self,
        meter: Meter,
        url: str,
        *,
        job: str = "meter",
        grouping_key: Mapping[str, str] | None = None,
        interval_s: float = DEFAULT_PUSH_INTERVAL_S,
        basic_auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
        include_windows: bool = True,
    ) -> None:
        if not url or not isinstance(url, str):
            raise ConfigError("the Pushgateway URL is empty; e.g. http://pushgateway:9091")
        if "://" in url and not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"Pushgateway URL {_redact(url)!r} must be http:// or https://", setting="url"
            )
        if not job:
            raise ConfigError("the Pushgateway job name is empty", setting="job")
        if not (interval_s > 0):
            raise ConfigError(
                f"push interval_s must be a positive number of seconds, got {interval_s!r}",
                setting="interval_s",
            )
        self.meter = meter
        self.url = url
        self.job = job
        self.grouping_key = dict(default_grouping_key() if grouping_key is None else grouping_key)
        self.interval_s = float(interval_s)
        self.timeout_s = timeout_s
        self.registry = make_registry(meter, include_windows=include_windows)
        self._handler: Callable[..., Callable[[], None]] = default_handler
        if basic_auth is not None:
            user, password = basic_auth

            def handler(
                url: str,
                method: str,
                timeout: float | None,
                headers: list[tuple[str, str]],
                data: bytes,
            ) -> Callable[[], None]:
                return basic_auth_handler(url, method, timeout, headers, data, user, password)

            self._handler = handler
        self.pushes = 0
        self.last_error: str | None = None
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finalizer: Any = None
        self._closed = False

    def push_now(self) -> None:
        """Push the current values now (PUT: replaces this group on the gateway). Raises on
        failure (``OSError``/``urllib.error.URLError``)."""
        with self._push_lock:
            push_to_gateway(
                self.url,
                job=self.job,
                registry=self.registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout_s,
                handler=self._handler,
            )
            self.pushes += 1
            self.last_error = None

    def _try_push(self) -> bool:
        try:
            self.push_now()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "meter: push to the Pushgateway %s failed (%s); will retry",
                _redact(self.url),
                self.last_error,
            )
            return False
        return True

    def start(self) -> Pusher:
        """Push every ``interval_s`` seconds from a daemon thread (idempotent)."""
        if self._thread is None and not self._closed:
            self.meter.start()
            thread = threading.Thread(target=self._run, name="meter-push", daemon=True)
            self._thread = thread
            thread.start()
            self._finalizer = weakref.finalize(self, _stop, self._stop, thread)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._try_push()

    def close(self, final_push: bool = True) -> bool:
        """Stop the thread (joined) and, with ``final_push``, push the final values once.
        Idempotent; returns whether the final push succeeded (True when none was asked)."""
        if self._closed:
            return True
        self._closed = True
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()
        return self._try_push() if final_push else True

    def __enter__(self) -> Pusher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

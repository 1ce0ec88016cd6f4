"""`RequestMeasurement`: one metered request, and the bounded label values it is counted under.

``method`` is one of the standard HTTP methods or `OTHER`; ``status`` a class (``2xx``,
``4xx``, ...); ``route`` a route template (`meter.integrations.asgi.routes`), `UNMATCHED` or,
beyond the cap of `meter.integrations.asgi.metrics.RequestMetrics`, `OTHER`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meter import Measurement, Window

__all__ = ["METHODS", "OTHER", "UNMATCHED", "RequestMeasurement", "method_label", "status_class"]

#: ``route`` label of a request no route matched (a 404 of the router, a slash redirect, an
#: app without a router).
UNMATCHED = "unmatched"
#: ``route`` label once the cap of distinct routes is reached (or for an absurdly long route),
#: and ``method`` label of a non-standard HTTP method.
OTHER = "other"
#: The HTTP methods counted under their own name (RFC 9110 and PATCH); others are `OTHER`.
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)

_STATUS_CLASSES = {c: f"{c}xx" for c in range(1, 6)}


def method_label(method: object) -> str:
    """``method`` itself when it is a standard HTTP method, else `OTHER`."""
    return method if isinstance(method, str) and method in METHODS else OTHER


def status_class(status: int | None) -> str:
    """``2xx`` for 200..299 and so on. No response at all (the app raised or returned without
    one) counts as ``5xx``: the server answers 500 then.

    >>> [status_class(s) for s in (204, 404, None, 700)]
    ['2xx', '4xx', '5xx', 'other']
    """
    if status is None:
        return "5xx"
    return _STATUS_CLASSES.get(status // 100, OTHER)


@dataclass(frozen=True)
class RequestMeasurement:
    """One metered request: what ``on_measurement`` receives, and what the app finds in
    ``request.state.meter_request`` (``scope["state"]["meter_request"]``) once the response
    body has been sent (in a background task, say).

    ``route``, ``method`` and ``status_class`` are the metric labels; ``status`` is the HTTP
    status (None when the app sent no response); ``output_tokens`` the last
    ``completion_tokens`` / ``output_tokens`` of an OpenAI-style ``usage`` in the response
    (None when there was none); ``streamed`` whether the body came in several messages;
    ``energy_j`` and ``co2e_g`` the request's fair share of the devices' joules and its
    location-based CO2e (None without carbon accounting); ``measurement`` the request's whole
    `meter.Measurement`, built on first use (a request nobody looks at closer costs only its
    totals).
    """

    route: str
    method: str
    status: int | None
    output_tokens: int | None
    streamed: bool
    energy_j: float
    co2e_g: float | None
    window: Window = field(repr=False, compare=False)

    @property
    def status_class(self) -> str:
        return status_class(self.status)

    @property
    def measurement(self) -> Measurement:
        """The request's `meter.Measurement` (per device, idle split, CO2e both ways, ...)."""
        result = self.window.result
        if result is None:
            raise RuntimeError("meter: the measurement of this request could not be built")
        return result

    @property
    def energy_per_output_token_j(self) -> float | None:
        """Joules per output token, when the response reported output tokens."""
        if not self.output_tokens:
            return None
        return self.energy_j / self.output_tokens

"""`EnergyMiddleware`: energy per HTTP request and per output token for any ASGI app.

Wrap an app (FastAPI, Starlette, vLLM's OpenAI server, any ASGI callable) and every HTTP
request becomes a shared window of one group of the meter: energy spent while several requests
are in flight is split equally among them, so the requests' shares add up to the device energy
spent while any request was in flight. Output tokens are read from OpenAI-compatible ``usage``
objects (a JSON body, or the final chunk of a ``text/event-stream`` response), and each request
is counted in Prometheus metrics labelled by route template, method and status class.

>>> from fastapi import FastAPI                                  # doctest: +SKIP
>>> from meter.integrations.asgi import EnergyMiddleware         # doctest: +SKIP
>>> app = FastAPI()                                              # doctest: +SKIP
>>> app.add_middleware(EnergyMiddleware)                         # doctest: +SKIP

vLLM: ``vllm serve MODEL --middleware meter.integrations.asgi.EnergyMiddleware`` (vLLM passes only
``app``, so the defaults apply: the process default meter, metrics in prometheus_client's
default registry, which vLLM's ``/metrics`` serves, and ``/metrics`` itself left unmetered).

Metrics (names and labels are a contract with the shipped Grafana dashboard):

* ``meter_request_energy_joules`` (histogram): each request's share of the device energy;
* ``meter_request_co2e_grams_total`` (counter): its location-based CO2e;
* ``meter_requests_total`` (counter): metered requests;
* ``meter_output_tokens_total`` (counter): output tokens reported in ``usage``;

all labelled ``route`` (the route template such as ``/v1/chat/completions`` or
``/users/{user_id}/items/{item_id}``, joined across the mounts that matched, never the raw path;
``unmatched`` when no route matched, e.g. the router's 404s; ``other`` beyond the cap of
distinct routes), ``method`` (``GET``, ``POST``, ...; ``other`` for non-standard methods) and
``status`` (``2xx``, ``4xx``, ...).

The modules, one concern each:

* `meter.integrations.asgi.middleware`: `EnergyMiddleware`, the ASGI plumbing and the windows;
* `meter.integrations.asgi.routes`: the route template of a request, across mounts and routers;
* `meter.integrations.asgi.tokens`: output tokens scanned from response bodies as they stream;
* `meter.integrations.asgi.measurement`: `RequestMeasurement` and the bounded label values;
* `meter.integrations.asgi.metrics`: `RequestMetrics`, the Prometheus families and route cap.
"""

from meter.integrations.asgi.measurement import OTHER, UNMATCHED, RequestMeasurement
from meter.integrations.asgi.metrics import DEFAULT_BUCKETS_J, DEFAULT_MAX_ROUTES, RequestMetrics
from meter.integrations.asgi.middleware import (
    DEFAULT_EXCLUDE_PATHS,
    DEFAULT_GROUP,
    EnergyMiddleware,
)

__all__ = [
    "DEFAULT_BUCKETS_J",
    "DEFAULT_EXCLUDE_PATHS",
    "DEFAULT_GROUP",
    "DEFAULT_MAX_ROUTES",
    "OTHER",
    "UNMATCHED",
    "EnergyMiddleware",
    "RequestMeasurement",
    "RequestMetrics",
]

"""Prometheus exporter: a scrape-time collector, a scrape server, an ASGI app, Pushgateway.

>>> import meter
>>> from meter.exporters.prometheus import start_http_server
>>> server = start_http_server(meter.get_meter())     # doctest: +SKIP
>>> server.url                                         # doctest: +SKIP
'http://127.0.0.1:10144/metrics'

Names (a contract with the Grafana dashboard), all in base units:

* ``meter_energy_joules_total`` (counter) and ``meter_power_watts`` (gauge), labels ``device``
  (``gpu:0``, ``cpu:0``, ``dram:0``), ``kind``, ``model``, ``uuid``, ``method``;
* ``meter_co2e_grams_total`` (counter), labels ``device``, ``accounting`` (``location``,
  ``market``, ``embodied``);
* ``meter_grid_carbon_intensity_grams_per_kwh`` (gauge), labels ``zone``, ``source``;
  ``meter_pue`` (gauge);
* per window name: ``meter_window_energy_joules_total``, ``meter_window_co2e_grams_total``,
  ``meter_window_seconds_total``, ``meter_windows_total``, label ``window``;
* ``meter_idle_power_watts{device}`` where known, ``meter_device_up{device}``,
  ``meter_device_read_errors_total{device}``, ``meter_start_time_seconds``, and
  ``meter_info{version, zone}``.
"""

from meter.exporters.prometheus.collector import METRICS, MeterCollector, make_registry, register
from meter.exporters.prometheus.push import DEFAULT_PUSH_INTERVAL_S, Pusher, default_grouping_key
from meter.exporters.prometheus.server import (
    DEFAULT_ADDR,
    DEFAULT_PORT,
    MetricsServer,
    load_basic_auth,
    metrics_asgi_app,
    start_http_server,
)

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_PORT",
    "DEFAULT_PUSH_INTERVAL_S",
    "METRICS",
    "MeterCollector",
    "MetricsServer",
    "Pusher",
    "default_grouping_key",
    "load_basic_auth",
    "make_registry",
    "metrics_asgi_app",
    "register",
    "start_http_server",
]

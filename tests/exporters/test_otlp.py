"""The OTLP exporter against a real receiver: a local OTLP/HTTP endpoint that decodes what the
SDK's own exporter sends (``ExportMetricsServiceRequest``), and the CLI's ``--otlp``."""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "opentelemetry.sdk.metrics", reason="needs the otel extra: pip install '.[otel]'"
)
pytest.importorskip(
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    reason="needs the otel extra: pip install '.[otel]'",
)
metrics_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
    reason="needs opentelemetry-proto (the test extra) to decode OTLP",
)

from meter.exporters.otlp import METRICS, metrics_url, start_otlp  # noqa: E402

from meter.errors import ConfigError  # noqa: E402
from tests.exporters.promservers import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Receiver:
    """An OTLP/HTTP metrics endpoint on 127.0.0.1 that keeps every decoded request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.paths.append(self.path)
                receiver.headers.append(dict(self.headers))
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="otlp-receiver", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def metrics(self, request: Any) -> dict[str, Any]:
        """name -> Metric of one request."""
        out = {}
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def last(self) -> dict[str, Any]:
        """name -> Metric, the latest request that carried it."""
        out: dict[str, Any] = {}
        for request in self.requests:
            out.update(self.metrics(request))
        return out


def attrs(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_metrics_url_appends_the_signal_path():
    assert metrics_url("http://c:4318") == "http://c:4318/v1/metrics"
    assert metrics_url("http://c:4318/") == "http://c:4318/v1/metrics"
    assert metrics_url("http://c:4318/otel") == "http://c:4318/otel/v1/metrics"
    assert metrics_url("http://c:4318/v1/metrics") == "http://c:4318/v1/metrics"
    with pytest.raises(ConfigError, match="http"):
        metrics_url("collector:4318")


def test_names_units_attributes_and_cumulative_energy(meter_factory, receiver):
    m = meter_factory(300.0, 150.0, market_factor_g_per_kwh=100.0, max_windows=1)
    exporter = start_otlp(m, receiver.url, interval_s=60, headers={"x-api-key": "k"})
    for name in ("step", "step", "eval", "other-name"):  # eval and other-name fold into other
        with m.measure(name):
            pass
    assert exporter.force_flush()
    m.refresh()
    assert exporter.close()
    assert len(receiver.requests) == 2
    assert receiver.paths == ["/v1/metrics", "/v1/metrics"]
    assert receiver.headers[0]["x-api-key"] == "k"

    resource = {
        kv.key: kv.value.string_value
        for kv in receiver.requests[-1].resource_metrics[0].resource.attributes
    }
    assert resource["service.name"] == os.environ.get("OTEL_SERVICE_NAME", "meter")

    got = receiver.last()
    for name, (instrument, unit, _) in METRICS.items():
        if name in ("meter.grid.carbon_intensity", "meter.request.energy"):
            continue  # no zone configured here; no HTTP request (its own test below)
        assert name in got, name
        assert got[name].unit == unit, name
        kind = got[name].WhichOneof("data")
        assert kind == {"counter": "sum", "gauge": "gauge", "histogram": "histogram"}[instrument]

    # hw.energy: a cumulative monotonic sum per device, from the meter's start.
    energies = []
    for request in receiver.requests:
        metric = receiver.metrics(request)["hw.energy"]
        assert metric.sum.is_monotonic
        assert metric.sum.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
        energies.append({attrs(p)["hw.id"]: p.as_double for p in metric.sum.data_points})
    assert set(energies[-1]) == {"gpu:0", "gpu:1"}
    for key in energies[-1]:
        assert energies[-1][key] >= energies[0][key]
    points = {attrs(p)["hw.id"]: p for p in got["hw.energy"].sum.data_points}
    a = attrs(points["gpu:0"])
    assert a["hw.type"] == "gpu"
    assert a["hw.vendor"] == "NVIDIA"
    assert a["meter.method"] == "simulated"
    assert a["hw.model"] and a["hw.name"].startswith("gpu:0")
    # The meter's own totals at the state the last export read (start_state subtracted).
    base = m.start_state
    for i, track in enumerate(m.ledger.tracks):
        expected = track.snapshot().energy_j - base[i].energy_j
        assert points[track.info.key].as_double == pytest.approx(expected, rel=1e-9)
    host = got["hw.host.energy"].sum.data_points[0].as_double
    assert host == pytest.approx(sum(p.as_double for p in points.values()), rel=1e-9)
    assert {attrs(p)["hw.id"]: p.as_double for p in got["hw.power"].gauge.data_points} == {
        "gpu:0": pytest.approx(300.0, rel=0.05),
        "gpu:1": pytest.approx(150.0, rel=0.05),
    }
    accountings = {attrs(p)["meter.accounting"] for p in got["meter.co2e"].sum.data_points}
    assert {"location", "market"} <= accountings

    windows = {
        attrs(p)["meter.window"]: p for p in got["meter.window.energy"].histogram.data_points
    }
    assert set(windows) == set(m.window_stats) == {"step", "other"}
    assert windows["step"].count == 2 and windows["other"].count == 2
    assert windows["step"].sum == pytest.approx(m.window_stats["step"].energy_j, rel=1e-9)


def test_unreachable_endpoint_warns_once_and_never_raises(meter_factory, caplog):
    m = meter_factory(300.0)
    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.DEBUG):
        exporter = start_otlp(m, url, interval_s=60, timeout_s=0.5)
        assert not exporter.force_flush() or exporter.last_ok is False
        exporter.force_flush()
        assert exporter.close() is False
        exporter.close()  # idempotent
    assert exporter.failures >= 2
    warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and (r.name.startswith("opentelemetry") or "OTLP" in r.getMessage())
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name == "meter"
    assert url in warnings[0].getMessage()


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METER_", "OTEL_"))}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["METER_IDLE_FILE"] = "/nonexistent/idle.json"
    env.update(extra)
    return env


def test_meter_run_otlp_delivers_the_runs_energy(receiver, tmp_path):
    out = tmp_path / "runs.jsonl"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "meter", "run", "--no-cpu", "-q", "-o", str(out)),
            *("--otlp", receiver.url, "--", "sleep", "3"),
        ],
        env=_cli_env(METER_SIMULATE_GPUS="300"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "over OTLP" in proc.stderr
    record = json.loads(out.read_text().splitlines()[-1])
    duration = record["duration_s"]
    assert duration >= 3.0
    energy = receiver.last()["hw.energy"]
    points = [p for p in energy.sum.data_points if attrs(p)["hw.type"] == "gpu"]
    assert len(points) == 1
    expected = 300.0 * duration
    assert abs(points[0].as_double - expected) / expected < 0.03, (points[0].as_double, expected)


def test_meter_run_otlp_env_endpoint(receiver):
    proc = subprocess.run(
        [sys.executable, "-m", "meter", "run", "--no-cpu", "-q", "--otlp", "--", "true"],
        env=_cli_env(METER_SIMULATE_GPUS="300", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert receiver.paths and receiver.paths[-1] == "/v1/metrics"
    assert "hw.energy" in receiver.last()


def test_meter_run_otlp_unreachable_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "meter", "run", "--no-cpu", "-q", "--otlp", url, "--", "true"],
        env=_cli_env(METER_SIMULATE_GPUS="300", OTEL_EXPORTER_OTLP_TIMEOUT="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if url in line]
    assert len(lines) == 2, proc.stderr  # "exporting to URL" and the one warning
    assert "Traceback" not in proc.stderr


def test_meter_run_otlp_bad_url_fails_before_the_command(tmp_path):
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "meter", "run", "--no-cpu", "-q", "--otlp", "touch"),
            str(marker),
        ],
        env=_cli_env(METER_SIMULATE_GPUS="300"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--otlp" in proc.stderr and "-- CMD" in proc.stderr
    assert not marker.exists()


def test_otlp_without_the_extra_fails_before_the_command(tmp_path):
    marker = tmp_path / "ran"
    code = (
        "import sys; sys.modules['opentelemetry.sdk'] = None; from meter.cli import main; "
        f"sys.exit(main(['run', '--no-cpu', '-q', '--otlp', '--', 'touch', {str(marker)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=_cli_env(METER_SIMULATE_GPUS="300"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pip install '.[otel]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not marker.exists()


def test_request_energy_goes_out_with_route_templates_and_the_route_cap(meter_factory, receiver):
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from meter.integrations.asgi import EnergyMiddleware
    from meter.integrations.asgi.metrics import REQUEST_OBSERVERS
    from starlette.testclient import TestClient

    m = meter_factory(300.0)
    exporter = start_otlp(m, receiver.url, interval_s=60)
    app = FastAPI()

    @app.get("/users/{user_id}")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    with TestClient(EnergyMiddleware(app, meter=m, registry=None)) as client:
        for user_id in range(5):  # five raw paths, one route template
            assert client.get(f"/users/{user_id}").status_code == 200
        assert client.get("/nowhere").status_code == 404
    assert exporter.close()
    assert exporter._request_observer not in REQUEST_OBSERVERS  # close() unhooks it
    metric = receiver.last()["meter.request.energy"]
    assert metric.unit == "J"
    points = {
        (attrs(p)["http.route"], attrs(p)["meter.status_class"]): p
        for p in metric.histogram.data_points
    }
    assert set(points) == {("/users/{user_id}", "2xx"), ("unmatched", "4xx")}  # no raw path
    assert points[("/users/{user_id}", "2xx")].count == 5
    assert attrs(points[("/users/{user_id}", "2xx")])["http.request.method"] == "GET"
    assert points[("/users/{user_id}", "2xx")].sum > 0


def test_the_route_cap_of_the_otlp_requests_is_the_prometheus_one() -> None:
    from meter.integrations.asgi.metrics import DEFAULT_MAX_ROUTES, OTHER, RouteCap

    cap = RouteCap()
    routes = [cap(f"/r{i}") for i in range(DEFAULT_MAX_ROUTES + 50)]
    assert len(set(routes) - {OTHER}) == DEFAULT_MAX_ROUTES
    assert routes[-1] == OTHER and cap("/r0") == "/r0"

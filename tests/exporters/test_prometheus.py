"""The Prometheus exporter without external binaries: exposition, serving, pushing, the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from meter.exporters.prometheus import (
    DEFAULT_PORT,
    METRICS,
    MeterCollector,
    Pusher,
    default_grouping_key,
    load_basic_auth,
    make_registry,
    metrics_asgi_app,
    register,
    start_http_server,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meter import __version__
from meter.errors import ConfigError
from meter.testing import SimulatedGPU
from meter.testing.clock import FakeClock
from meter.testing.replay import advance
from tests.exporters.promservers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def families(registry: Any) -> dict[str, Any]:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(registry: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called ``name`` (full sample name, e.g. ``meter_energy_joules_total``)."""
    out = {}
    for family in families(registry).values():
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_device(registry: Any, name: str, **match: str) -> dict[str, float]:
    out = {}
    for labels, value in samples(registry, name).items():
        d = dict(labels)
        if all(d.get(k) == v for k, v in match.items()):
            out[d["device"]] = value
    return out


# -- exposition ---------------------------------------------------------------------------------


def test_every_contract_name_type_and_label(meter_factory):
    m = meter_factory(300.0, 150.0, idle_power_w={"gpu:0": 60.0}, market_factor_g_per_kwh=100.0)
    registry = make_registry(m)
    with m.measure("step"):
        time.sleep(0.05)
    fams = families(registry)
    # The text format names counter families without _total; an info metric is a gauge there.
    for name, (kind, labels) in METRICS.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert family_name in fams, f"{name} missing from the exposition"
        family = fams[family_name]
        assert family.type == ("gauge" if kind == "info" else kind), name
        assert family.samples, name
        for s in family.samples:
            assert s.name == name
            assert set(s.labels) == set(labels), (name, s.labels)

    energy = samples(registry, "meter_energy_joules_total")
    labels = {dict(k)["device"]: dict(k) for k in energy}
    assert set(labels) == {"gpu:0", "gpu:1"}
    assert labels["gpu:0"]["kind"] == "gpu"
    assert labels["gpu:0"]["method"] == "simulated"
    assert labels["gpu:0"]["model"].startswith("Simulated NVIDIA")
    assert labels["gpu:0"]["uuid"].startswith("GPU-")
    accounting = {dict(k)["accounting"] for k in samples(registry, "meter_co2e_grams_total")}
    assert accounting == {"location", "market", "embodied"}
    (info,) = samples(registry, "meter_info")
    assert dict(info) == {"version": __version__, "zone": m.accountant.zone.key}
    (intensity,) = samples(registry, "meter_grid_carbon_intensity_grams_per_kwh").items()
    assert dict(intensity[0])["zone"] == m.accountant.zone.key
    assert intensity[1] == pytest.approx(m.accountant.current.g_per_kwh)
    assert by_device(registry, "meter_idle_power_watts") == {"gpu:0": 60.0}


def test_counters_are_in_joules_since_start_and_power_in_watts(clocked_meter):
    m, clock = clocked_meter(300.0, 150.0, carbon=True, interval_s=0.05)
    registry = make_registry(m)
    first = by_device(registry, "meter_energy_joules_total")
    advance(m, clock, 0.5)
    # The exporter shows the figures of the sampler's last tick (it never carries them
    # forward): the energy from the start up to that tick's time.
    tick = [track.snapshot().t for track in m.ledger.tracks]
    power = by_device(registry, "meter_power_watts")
    later = by_device(registry, "meter_energy_joules_total")
    assert first == {"gpu:0": pytest.approx(0.0, abs=1e-6), "gpu:1": pytest.approx(0.0, abs=1e-6)}
    for i, (key, watts) in enumerate((("gpu:0", 300.0), ("gpu:1", 150.0))):
        assert m.started_at < tick[i] <= clock()
        # (within a millisecond's joules: the sensor model publishes its counter in steps)
        assert later[key] == pytest.approx(watts * (tick[i] - m.started_at), abs=watts * 1e-3), key
    assert power == pytest.approx({"gpu:0": 300.0, "gpu:1": 150.0}, rel=5e-3)
    # CO2e follows the energy at the intensity in force (PUE 1 by default).
    co2e = by_device(registry, "meter_co2e_grams_total", accounting="location")
    g_per_j = m.accountant.current.g_per_kwh / 3.6e6
    assert co2e["gpu:0"] == pytest.approx(later["gpu:0"] * g_per_j, rel=1e-3)
    embodied = by_device(registry, "meter_co2e_grams_total", accounting="embodied")
    elapsed = clock() - m.started_at
    assert embodied["gpu:0"] == pytest.approx(m.embodied["gpu:0"].g_per_s * elapsed, rel=0.05)
    assert "market" not in {
        dict(k)["accounting"] for k in samples(registry, "meter_co2e_grams_total")
    }


def test_no_nvml_call_during_a_scrape(meter_factory):
    gpus = [SimulatedGPU(300.0), SimulatedGPU(150.0)]
    m = meter_factory(*gpus)
    registry = make_registry(m)
    time.sleep(0.3)
    m.sampler.stop()  # now only a scrape could call NVML
    before = [dict(g.calls) for g in gpus]
    for _ in range(20):
        generate_latest(registry)
    assert [dict(g.calls) for g in gpus] == before


def test_a_scrape_never_waits_for_a_hung_device(meter_factory):
    """A driver call that never returns (the sampler is stuck inside it, holding the device)
    must not hang /metrics."""
    gpu = SimulatedGPU(300.0)
    m = meter_factory(gpu)
    registry = make_registry(m)
    m.wait_ready()
    calls = sum(gpu.calls.values())
    release = gpu.inject_hang()  # the sampler's next NVML call does not return
    done = threading.Event()
    try:
        deadline = time.monotonic() + 2.0
        while sum(gpu.calls.values()) == calls and time.monotonic() < deadline:
            time.sleep(0.01)  # until the sampler is inside the hung call
        assert sum(gpu.calls.values()) > calls, "the sampler never called the device"

        def scrape() -> None:
            generate_latest(registry)
            done.set()

        threading.Thread(target=scrape, daemon=True).start()
        assert done.wait(2.0), "the scrape blocked on the hung device"
    finally:
        release.set()


def test_counters_stay_monotonic_while_power_drops(clocked_meter):
    # 300 W, then nothing: extrapolating the last power overshoots; the counter must not dip.
    clock = FakeClock()
    gpu = SimulatedGPU(
        lambda t: 300.0 if t < 0.8 else 0.0, counter_update_s=0.1, counter_phase_s=0.0, clock=clock
    )
    m, _ = clocked_meter(gpu, clock=clock, carbon=True, interval_s=0.05)
    registry = make_registry(m)
    collector = MeterCollector(m)
    previous: dict[tuple[str, str], float] = {}
    for _ in range(320):  # 1.6 s in 5 ms steps, a scrape after each
        advance(m, clock, 0.005)
        for family in collector.collect():
            if family.type != "counter":
                continue
            for s in family.samples:
                key = (s.name, repr(sorted(s.labels.items())))
                assert s.value >= previous.get(key, 0.0), (key, s.value, previous.get(key))
                previous[key] = s.value
    # Once the power is 0 the exposed counter is the meter's own total, exactly.
    final = by_device(registry, "meter_energy_joules_total")["gpu:0"]
    assert final == pytest.approx(m.totals()["gpu:0"] - m.start_state[0][0], rel=1e-6)
    # Against the truth: between two counter updates the ledger extrapolates the last rate,
    # and an exposed counter never steps back, so a drop to 0 W leaves it ahead by what was
    # extrapolated before the drop showed: at most 1.5 update periods of the old power (a
    # board that still draws power absorbs it; windows correct it at exit from the counter
    # values around their boundaries). Known gap, see the README.
    truth = gpu.energy_between_j(m.started_at, clock())
    assert truth <= final <= truth + 300.0 * 0.1 * 1.5 + 0.5, (final, truth)


def test_before_start_only_static_series(meter_factory):
    m = meter_factory(300.0)
    registry = CollectorRegistry()
    registry.register(MeterCollector(m))
    fams = families(registry)
    assert "meter" in fams or "meter_info" in fams
    assert not samples(registry, "meter_energy_joules_total")
    assert m.started_at is None  # a scrape does not start (or block on) the meter


def test_registration_does_not_collect(meter_factory):
    m = meter_factory(300.0)
    collector = MeterCollector(m)
    calls = []
    original = collector.collect

    def spy() -> Iterator[Any]:
        calls.append(1)
        return original()

    collector.collect = spy  # type: ignore[method-assign]
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    assert calls == []
    assert register(m, None) is not None  # registry=None: build, start, register nowhere


def test_label_values_are_escaped(meter_factory):
    model = 'Board "X"\\ 80GB\nrev 2'
    m = meter_factory(SimulatedGPU(300.0, model=model))
    registry = make_registry(m)
    name = 'gen "fast"\\path\nline2 ünïcode'
    with m.measure(name):
        pass
    text = generate_latest(registry).decode()
    assert "\nrev 2" not in text  # the newline is escaped, never raw
    energy = samples(registry, "meter_energy_joules_total")
    assert [dict(k)["model"] for k in energy] == [model]
    windows = samples(registry, "meter_windows_total")
    assert windows == {(("window", name),): 1.0}


def test_window_series_add_up_the_windows(meter_factory):
    m = meter_factory(300.0, market_factor_g_per_kwh=0.0)
    registry = make_registry(m)
    results = []
    for _ in range(3):
        with m.measure("step") as w:
            time.sleep(0.02)
        results.append(w.result)
    with m.measure("epoch") as e:
        time.sleep(0.02)
    assert samples(registry, "meter_windows_total") == {
        (("window", "epoch"),): 1.0,
        (("window", "step"),): 3.0,
    }
    step = (("window", "step"),)
    energy = samples(registry, "meter_window_energy_joules_total")
    assert energy[step] == pytest.approx(sum(r.energy_j for r in results))
    seconds = samples(registry, "meter_window_seconds_total")
    assert seconds[step] == pytest.approx(sum(r.duration_s for r in results))
    co2e = samples(registry, "meter_window_co2e_grams_total")
    assert co2e[step] == pytest.approx(sum(r.co2e_g for r in results))
    assert co2e[(("window", "epoch"),)] == pytest.approx(e.result.co2e_g)
    assert not samples(make_registry(m, include_windows=False), "meter_windows_total")


def test_ten_thousand_window_names_stay_within_the_window_cap(clocked_meter, caplog):
    """10,000 distinct window names: the ``window`` label takes max_windows + 1 values (the
    later names count as ``other``), the series stay few, every joule is still counted, and
    one warning says how to raise the cap."""
    m, clock = clocked_meter(300.0, 150.0, max_windows=50)
    registry = make_registry(m)
    windows = []
    with caplog.at_level(logging.WARNING, logger="meter"):
        for i in range(10_000):
            with m.measure(f"user-{i}") as w:
                advance(m, clock, 0.001)
            windows.append(w)
        text = generate_latest(registry).decode()
    energy = samples(registry, "meter_window_energy_joules_total")
    labels = {dict(k)["window"] for k in energy}
    assert len(labels) == 51 and "other" in labels
    for name in ("meter_windows_total", "meter_window_seconds_total"):
        assert {dict(k)["window"] for k in samples(registry, name)} == labels
    assert samples(registry, "meter_windows_total")[(("window", "other"),)] == 9_950
    assert sum(energy.values()) == pytest.approx(sum(w.result.energy_j for w in windows))
    assert sum(1 for line in text.splitlines() if line.startswith("meter_window")) == 4 * 51
    warnings = [r for r in caplog.records if "max_windows=50" in r.getMessage()]
    assert len(warnings) == 1 and "METER_MAX_WINDOWS" in warnings[0].getMessage()


def test_an_unreadable_device_is_flagged_and_its_counter_frozen(meter_factory):
    gpus = [SimulatedGPU(300.0), SimulatedGPU(150.0)]
    m = meter_factory(*gpus)
    registry = make_registry(m)
    time.sleep(0.2)
    gpus[1].inject_error("gpu_lost")
    deadline = time.monotonic() + 2
    while m.ledger.tracks[1].snapshot().unreadable_since is None and time.monotonic() < deadline:
        time.sleep(0.02)
    frozen = by_device(registry, "meter_energy_joules_total")["gpu:1"]
    time.sleep(0.2)
    assert by_device(registry, "meter_energy_joules_total")["gpu:1"] == frozen
    assert by_device(registry, "meter_device_up") == {"gpu:0": 1.0, "gpu:1": 0.0}
    assert by_device(registry, "meter_device_read_errors_total")["gpu:1"] >= 1
    assert by_device(registry, "meter_device_unreadable_seconds_total")["gpu:1"] > 0
    assert by_device(registry, "meter_device_unreadable_seconds_total")["gpu:0"] == 0
    assert by_device(registry, "meter_device_rejected_reads_total") == {"gpu:0": 0, "gpu:1": 0}
    assert set(by_device(registry, "meter_power_watts")) == {"gpu:0"}
    # It comes back: up again, its counter moves on (the energy counter covered the gap).
    gpus[1].clear_errors()
    deadline = time.monotonic() + 5
    while m.ledger.tracks[1].snapshot().unreadable_since is not None:
        assert time.monotonic() < deadline, "gpu:1 did not resume"
        time.sleep(0.02)
    assert by_device(registry, "meter_device_up") == {"gpu:0": 1.0, "gpu:1": 1.0}
    assert by_device(registry, "meter_energy_joules_total")["gpu:1"] > frozen


def test_render_is_fast_with_8_gpus_and_100_windows(meter_factory):
    m = meter_factory(*([300.0] * 8))
    registry = make_registry(m)
    for i in range(100):
        with m.measure(f"w{i}", read_devices=False):
            pass
    generate_latest(registry)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[len(times) // 2] < 0.05  # the budget is 5 ms; generous for busy CI machines


# -- ASGI ---------------------------------------------------------------------------------------


async def asgi_get(app: Any, path: str = "/metrics") -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"accept", b"text/plain")],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_asgi_app_serves_the_metrics(meter_factory):
    m = meter_factory(300.0, 150.0)
    app = metrics_asgi_app(m)
    time.sleep(0.1)
    status, headers, body = asyncio.run(asgi_get(app))
    assert status == 200
    assert headers[b"Content-Type"].startswith(b"text/plain")
    text = body.decode()
    assert 'meter_energy_joules_total{device="gpu:0"' in text
    assert 'meter_power_watts{device="gpu:1"' in text


# -- the scrape server --------------------------------------------------------------------------


def test_http_server_on_loopback_by_default(meter_factory):
    m = meter_factory(300.0)
    with start_http_server(m, port=0) as server:
        assert server.addr == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        body = urllib.request.urlopen(server.url, timeout=5).read().decode()
        assert "meter_energy_joules_total" in body
    server.close()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
    assert DEFAULT_PORT == 10144


def test_port_in_use_says_so(meter_factory):
    m = meter_factory(300.0)
    with (
        start_http_server(m, port=0) as server,
        pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1"),
    ):
        start_http_server(m, port=server.port)


def _get(url: str, auth: tuple[str, str] | None = None, context: Any = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_basic_auth(meter_factory, tmp_path, caplog):
    m = meter_factory(300.0)
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"s3cret-sha").digest()).decode()
    path = tmp_path / "users"
    path.write_text(f"# scrapers\nprom:s3cret-plain\n\nother:{sha}\n")
    path.chmod(0o600)
    users = load_basic_auth(path)
    with caplog.at_level(logging.DEBUG, logger="meter"):
        with start_http_server(m, port=0, basic_auth=users) as server:
            assert _get(server.url) == 401
            assert _get(server.url, ("prom", "wrong")) == 401
            assert _get(server.url, ("nobody", "s3cret-plain")) == 401
            assert _get(server.url, ("prom", "s3cret-plain")) == 200
            assert _get(server.url, ("other", "s3cret-sha")) == 200
        with start_http_server(m, port=0, basic_auth=("u", "p")) as server:
            assert _get(server.url, ("u", "p")) == 200
    assert "s3cret" not in caplog.text


def test_basic_auth_file_errors_never_show_the_password(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("no-colon-s3cret\n")
    with pytest.raises(ConfigError) as err:
        load_basic_auth(bad)
    assert "s3cret" not in str(err.value) and "line 1" in str(err.value)
    bcrypt = tmp_path / "bcrypt"
    bcrypt.write_text("prom:$2y$05$abcdefghijklmnopqrstuv\n")
    with pytest.raises(ConfigError, match="hashed htpasswd"):
        load_basic_auth(bcrypt)
    with pytest.raises(ConfigError, match="cannot read"):
        load_basic_auth(tmp_path / "missing")


def make_cert(tmp_path: Any) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("`openssl` is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_tls_with_basic_auth(meter_factory, tmp_path):
    cert, key = make_cert(tmp_path)
    m = meter_factory(300.0)
    with start_http_server(
        m, port=0, certfile=cert, keyfile=key, basic_auth=("prom", "pw")
    ) as server:
        assert server.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        assert _get(server.url, ("prom", "pw"), context) == 200
        assert _get(server.url, None, context) == 401
        # A client that never completes the handshake does not stall other scrapes.
        with socket.create_connection(("127.0.0.1", server.port)):
            assert _get(server.url, ("prom", "pw"), context) == 200
    with pytest.raises(ConfigError, match="TLS certificate"):
        start_http_server(m, port=0, certfile=str(tmp_path / "nope.pem"))


# -- Pushgateway --------------------------------------------------------------------------------


class FakeGateway:
    """An in-process HTTP server that records pushes like a Pushgateway would accept them."""

    def __init__(self, status: int = 200) -> None:
        self.pushes: list[tuple[str, str, dict[str, str], str]] = []
        self.status = status
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                gateway.pushes.append((self.command, self.path, dict(self.headers), body))
                self.send_response(gateway.status)
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def energy(self, index: int, device: str = "gpu:0") -> float:
        for family in text_string_to_metric_families(self.pushes[index][3]):
            for s in family.samples:
                if s.name == "meter_energy_joules_total" and s.labels["device"] == device:
                    return float(s.value)
        raise AssertionError("no energy in the push")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    g = FakeGateway()
    yield g
    g.close()


def test_pusher_grouping_key_auth_and_monotonic_pushes(meter_factory, gateway):
    m = meter_factory(300.0)
    pusher = Pusher(
        m,
        gateway.url,
        job="train",
        grouping_key={"instance": "node-1", "rank": "3"},
        interval_s=0.1,
        basic_auth=("pusher", "pw"),
    )
    pusher.start()
    time.sleep(0.45)
    assert pusher.close() is True
    assert len(gateway.pushes) >= 3  # periodic ones and the final one
    method, path, headers, _ = gateway.pushes[-1]
    assert method == "PUT"  # replaces the group: cumulative counters, never summed twice
    assert path == "/metrics/job/train/instance/node-1/rank/3"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"pusher:pw").decode()
    values = [gateway.energy(i) for i in range(len(gateway.pushes))]
    assert values == sorted(values) and values[-1] > values[0]
    assert values[-1] == pytest.approx(300.0 * (time.perf_counter() - m.started_at), rel=0.3)
    n = len(gateway.pushes)
    pusher.close()  # idempotent: no second final push
    assert len(gateway.pushes) == n


def test_push_failures_never_raise_into_the_job(meter_factory, caplog):
    m = meter_factory(300.0)
    port = free_port()  # nothing listens there
    pusher = Pusher(m, f"http://user:hunter2@127.0.0.1:{port}", interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="meter"):
        pusher.start()
        time.sleep(0.2)
        assert pusher.close() is False
    assert pusher.last_error is not None
    assert "hunter2" not in caplog.text and f"127.0.0.1:{port}" in caplog.text
    with pytest.raises(OSError):
        pusher.push_now()


def test_pusher_validates_its_settings(meter_factory):
    m = meter_factory(300.0)
    with pytest.raises(ConfigError):
        Pusher(m, "")
    with pytest.raises(ConfigError):
        Pusher(m, "ftp://gateway:9091")
    with pytest.raises(ConfigError):
        Pusher(m, "http://gateway:9091", interval_s=0)


def test_default_grouping_key():
    assert set(default_grouping_key({})) == {"instance"}
    assert default_grouping_key({"RANK": "2"})["rank"] == "2"


# -- the CLI ------------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["METER_IDLE_FILE"] = "/nonexistent/idle.json"
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        try:
            return str(urllib.request.urlopen(url, timeout=2).read().decode())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_meter_serve_stops_cleanly_on_signals(sig):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meter", "serve", "--port", str(port), "--no-cpu"],
        env=cli_env(METER_SIMULATE_GPUS="300,150"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = wait_http(f"http://127.0.0.1:{port}/metrics", proc)
        assert 'meter_power_watts{device="gpu:1",kind="gpu",method="simulated"' in text
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"serving http://127.0.0.1:{port}/metrics" in err
    assert f"{signal.Signals(sig).name} received, stopped" in err


def test_meter_serve_basic_auth_file_and_bad_tls_flags(tmp_path):
    users = tmp_path / "users"
    users.write_text("prom:t0psecret\n")
    users.chmod(0o600)
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "meter", "serve", "--port", str(port), "--no-cpu"),
            *("--basic-auth-file", str(users)),
        ],
        env=cli_env(METER_SIMULATE_GPUS="300"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 20
        while _get_or_none(url) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(url) == 401
        assert _get(url, ("prom", "t0psecret")) == 200
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "t0psecret" not in err
    bad = subprocess.run(
        [sys.executable, "-m", "meter", "serve", "--tls-cert", "x.pem"],
        env=cli_env(METER_SIMULATE_GPUS="300"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "--tls-key" in bad.stderr


def test_meter_serve_on_a_busy_port_fails_with_a_message():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "meter", "serve", "--port", str(port), "--no-cpu"],
            env=cli_env(METER_SIMULATE_GPUS="300"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)
    except OSError:
        return None


def test_meter_run_exposes_metrics_and_pushes_at_the_end(gateway):
    port = free_port()
    # The metered command scrapes its own metrics while it runs, and prints them.
    child = (
        "import time, urllib.request\n"
        "time.sleep(0.5)\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())\n"
    )
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "meter", "run", "--no-cpu", "--prometheus-port", str(port)),
            *("--push-gateway", gateway.url, "--push-job", "batch", "--push-interval", "60"),
            *("--", sys.executable, "-c", child),
        ],
        env=cli_env(METER_SIMULATE_GPUS="300", RANK="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'meter_energy_joules_total{device="gpu:0"' in proc.stdout
    assert f"metrics at http://127.0.0.1:{port}/metrics" in proc.stderr
    assert len(gateway.pushes) == 1  # interval 60 s: only the final push
    method, path, _, _ = gateway.pushes[0]
    assert method == "PUT" and path.startswith("/metrics/job/batch/instance/")
    assert path.endswith("/rank/1")
    assert gateway.energy(0) >= 300.0 * 0.5
    # The server is gone once the command is done.
    assert _get_or_none(f"http://127.0.0.1:{port}/metrics") is None

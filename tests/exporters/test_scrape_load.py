"""The scrape server under a crowd of scrapers: its listen queue holds 200 connections at once,
and every one of them gets the whole exposition. No timing assertion (the latency under load is
a benchmark: benchmarks/bench_metrics.py); the waits below are hang guards only."""

from __future__ import annotations

import selectors
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
from meter.exporters.prometheus import make_registry
from meter.exporters.prometheus.server import LISTEN_BACKLOG, _listen, _serve
from prometheus_client import make_wsgi_app
from prometheus_client.parser import text_string_to_metric_families

from meter.testing.replay import advance

SCRAPERS = 200
GPUS = 8
WINDOWS = 100
#: Hang guard for waits on sockets (never a timing assertion).
GUARD_S = 30.0


def somaxconn() -> int | None:
    """Linux's cap on every listen backlog (``net.core.somaxconn``), or None elsewhere."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return None


def listen_queue(sock: socket.socket) -> tuple[int, int]:
    """``(queued, backlog)`` of a listening TCP socket, as the kernel holds them: for a socket in
    LISTEN, Linux's TCP_INFO reports the connections waiting for ``accept()`` in
    ``tcpi_unacked`` and the backlog in force in ``tcpi_sacked`` (``tcp_get_info`` in
    net/ipv4/tcp.c). Both are u32s after eight one-byte fields and four other u32s."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    queued, backlog = struct.unpack_from("=II", info, 24)
    return queued, backlog


linux_only = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(socket, "TCP_INFO"),
    reason="reads the listen queue through Linux's TCP_INFO",
)


@pytest.fixture
def scrape_app(clocked_meter):
    """The scrape app of a meter on 8 simulated GPUs with 100 named windows, on a fake clock:
    nothing moves between scrapes, so every scrape renders the same bytes."""
    m, clock = clocked_meter(*([300.0] * GPUS))
    for i in range(WINDOWS):
        with m.measure(f"window-{i:03d}"):
            advance(m, clock, 0.01)
    advance(m, clock, 0.5)
    return make_wsgi_app(make_registry(m))


@linux_only
def test_the_listen_backlog_is_at_least_128(scrape_app):
    httpd = _listen(scrape_app, "127.0.0.1", 0, None)
    try:
        queued, backlog = listen_queue(httpd.socket)
    finally:
        httpd.server_close()
    # What the kernel applies: LISTEN_BACKLOG, or net.core.somaxconn where that is lower.
    assert backlog >= 128
    assert backlog == min(LISTEN_BACKLOG, somaxconn() or LISTEN_BACKLOG)
    assert queued == 0


@linux_only
@pytest.mark.skipif(
    (somaxconn() or 0) < SCRAPERS,
    reason=f"net.core.somaxconn={somaxconn()} caps every listen backlog below {SCRAPERS}",
)
def test_200_scrapers_at_once_are_all_queued_and_all_get_the_exposition(scrape_app):
    """200 scrapers connect while the accept loop has not taken any of them (the worst case of
    a crowd arriving at once): the kernel queues all 200 (with socketserver's backlog of 5 it
    queued 6 and dropped the other SYNs), then each gets a 200 with the whole exposition."""
    httpd = _listen(scrape_app, "127.0.0.1", 0, None)
    address = httpd.server_address[:2]
    clients: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(SCRAPERS):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            clients.append(client)
            client.setblocking(False)
            client.connect_ex(address)
            selector.register(client, selectors.EVENT_WRITE)
        # Wait until every handshake is done (a dropped SYN would never complete: nothing
        # accepts yet), then queue each client's request.
        pending = set(clients)
        while pending:
            ready = selector.select(timeout=GUARD_S)
            if not ready:
                break
            for key, _ in ready:
                client = key.fileobj
                assert isinstance(client, socket.socket)
                assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                selector.unregister(client)
                pending.discard(client)
                client.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        dropped = len(pending)
        assert dropped == 0, f"the listen queue dropped {dropped} of {SCRAPERS} connections"
        # Every connection is in the accept queue (the last ACKs may still be landing).
        deadline = time.monotonic() + GUARD_S
        while listen_queue(httpd.socket)[0] < SCRAPERS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listen_queue(httpd.socket)[0] == SCRAPERS

        with _serve(httpd):
            replies = {client: bytearray() for client in clients}
            for client in clients:
                selector.register(client, selectors.EVENT_READ)
            open_ = set(clients)
            while open_:
                ready = selector.select(timeout=GUARD_S)
                assert ready, f"{len(open_)} of {SCRAPERS} scrapes got no whole reply"
                for key, _ in ready:
                    client = key.fileobj
                    assert isinstance(client, socket.socket)
                    chunk = client.recv(65536)
                    if chunk:
                        replies[client] += chunk
                    else:  # the server closes the connection after its reply
                        selector.unregister(client)
                        open_.discard(client)
    finally:
        selector.close()
        for client in clients:
            client.close()
        httpd.server_close()

    bodies = set()
    for reply in replies.values():
        head, _, body = bytes(reply).partition(b"\r\n\r\n")
        assert head.split(b"\r\n", 1)[0].split()[1] == b"200", head
        bodies.add(body)
    assert len(bodies) == 1, "a fake clock: every scrape renders the same exposition"
    families = {f.name: f for f in text_string_to_metric_families(bodies.pop().decode())}
    devices = {s.labels["device"] for s in families["meter_energy_joules"].samples}
    assert devices == {f"gpu:{i}" for i in range(GPUS)}
    windows = {s.labels["window"]: s.value for s in families["meter_windows"].samples}
    assert windows == {f"window-{i:03d}": 1.0 for i in range(WINDOWS)}


def test_scrapes_share_a_render_until_the_figures_change(clocked_meter) -> None:
    from meter.exporters.prometheus.server import CachedMetricsApp, meter_version

    m, clock = clocked_meter(300.0, 150.0, interval_s=0.1)
    advance(m, clock, 0.5)
    app = CachedMetricsApp(make_registry(m), meter_version(m))

    def scrape() -> str:
        out: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}
        body = b"".join(app(environ, lambda status, headers: out.append(status)))
        assert out == ["200 OK"]
        return body.decode()

    def joules(text: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "meter_energy_joules_total"
                    and sample.labels["device"] == "gpu:0"
                ):
                    return sample.value
        raise AssertionError("no gpu:0 energy")

    first = scrape()
    for _ in range(50):
        assert scrape() == first  # nothing changed: the same page, one render
    assert app.renders == 1
    advance(m, clock, 0.2)  # the sampler published new figures
    second = scrape()
    assert app.renders == 2 and joules(second) > joules(first)  # never a stale page
    with m.measure("w"):
        pass
    m.settle_windows()
    assert 'window="w"' in scrape() and app.renders == 3  # a closed window shows at once

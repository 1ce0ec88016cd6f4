"""Real Prometheus and Pushgateway servers on 127.0.0.1 for the exporter tests.

`run_prometheus` and `run_pushgateway` start Debian's ``prometheus`` / ``prometheus-pushgateway``
binaries (skipping the test, with the reason, when they are not installed), wait until they
are ready, and kill them afterwards. conftest.py wraps them in the fixtures
``prometheus_server`` and ``pushgateway``.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

#: How long a binary may take to become ready.
READY_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The Debian package of each binary the tests run: promtool ships in `prometheus`.
DEBIAN_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
}


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGES.get(name, name)
        pytest.skip(
            f"`{name}` is not installed (Debian: apt-get install {package}; .ci/run installs it)"
        )
    return path


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout=1.0)
            if status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Prometheus:
    """A running Prometheus: ``query(expr)`` returns the API's ``result`` list."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}{path}?{query}")
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {status} {body[:500]!r}")
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query now: ``[{"metric": {...}, "value": [ts, "v"]}, ...]`` (or ``values``
        for a range-vector expression)."""
        result: list[dict[str, Any]] = self.api("/api/v1/query", query=expr)["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The value of a query that returns one series (None when it returns none)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; the result, or AssertionError."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.05)
        targets = self.api("/api/v1/targets")
        raise AssertionError(
            f"{expr!r} did not satisfy the predicate in {timeout} s; last result {result}; "
            f"targets {json.dumps(targets)[:1500]}"
        )

    def wait_for_value(
        self, expr: str, predicate: Callable[[float], bool], timeout: float = 15.0
    ) -> float:
        def ok(result: list[dict[str, Any]]) -> bool:
            return len(result) == 1 and predicate(float(result[0]["value"][1]))

        result = self.wait_for(expr, ok, timeout)
        return float(result[0]["value"][1])


def scrape_config(
    targets: Sequence[str] | dict[str, Any],
    scrape_interval: str = "200ms",
) -> str:
    """A Prometheus config (JSON is YAML) scraping ``targets`` (``host:port`` strings, as one
    job called ``meter``) or ``{"job": {...scrape_config fields...}}``."""
    if isinstance(targets, dict):
        jobs = [
            {"job_name": name, "static_configs": [{"targets": [spec.pop("target")]}], **spec}
            for name, spec in ((n, dict(s)) for n, s in targets.items())
        ]
    else:
        jobs = [{"job_name": "meter", "static_configs": [{"targets": list(targets)}]}]
    for job in jobs:
        job.setdefault("scrape_interval", scrape_interval)
        job.setdefault("scrape_timeout", scrape_interval)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": jobs,
    }
    return json.dumps(config, indent=2)


@contextlib.contextmanager
def run_prometheus(
    targets: Sequence[str] | dict[str, Any], scrape_interval: str = "200ms"
) -> Iterator[Prometheus]:
    """Start ``prometheus`` on a free 127.0.0.1 port scraping ``targets``; kill it at exit."""
    binary = need_binary("prometheus")
    with tempfile.TemporaryDirectory(prefix="meter-prometheus-") as tmp:
        root = Path(tmp)
        config = root / "prometheus.yml"
        config.write_text(scrape_config(targets, scrape_interval))
        port = free_port()
        log = root / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(f"{url}/-/ready", proc, log, "prometheus")
            yield Prometheus(url, proc, log)
        finally:
            _stop(proc)


@contextlib.contextmanager
def run_pushgateway() -> Iterator[str]:
    """Start ``prometheus-pushgateway`` on a free 127.0.0.1 port; yields its URL."""
    binary = need_binary("prometheus-pushgateway")
    with tempfile.TemporaryDirectory(prefix="meter-pushgateway-") as tmp:
        port = free_port()
        log = Path(tmp) / "pushgateway.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(f"{url}/-/ready", proc, log, "prometheus-pushgateway")
            yield url
        finally:
            _stop(proc)


def close_to(a: float, b: float, rel: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= rel * abs(b)

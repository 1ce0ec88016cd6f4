"""A metered run against live carbon providers served by local fakes on 127.0.0.1: the live
figure is reported, mid-window changes are priced, failures fall back and are recorded, and
tokens never leak."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from meter.exporters.jsonl import read_jsonl

from meter.carbon.accounting import J_PER_KWH
from meter.carbon.table import load_table
from meter.testing.carbon_servers import FakeElectricityMaps, FakeUKCarbonIntensity
from tests.meter.test_cli import run_meter

TOKEN = "em-secret-token-123"


def live_env(monkeypatch, url: str, **extra: str) -> None:
    monkeypatch.setenv("METER_CARBON_PROVIDER", "electricitymaps")
    monkeypatch.setenv("METER_CARBON_URL", url)
    monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", TOKEN)
    monkeypatch.setenv("METER_ZONE", "DE")
    for k, v in extra.items():
        monkeypatch.setenv(k, v)


def wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_live_figure_is_reported(meter_factory, monkeypatch):
    with FakeElectricityMaps(token=TOKEN, intensity=420.0) as fake:
        live_env(monkeypatch, fake.url)
        m = meter_factory(300.0)
        m.wait_ready()
        wait_for(lambda: m.accountant.current and m.accountant.current.source == "electricitymaps")
        with m.measure() as w:
            time.sleep(0.3)
    r = w.result
    assert r.carbon["provider"] == "electricitymaps"
    assert r.carbon["fallbacks"] == []
    assert r.co2e_g == pytest.approx(r.energy_j / J_PER_KWH * 420.0, rel=1e-6)
    assert fake.requests and fake.requests[0].headers.get("auth-token") == TOKEN


def test_windows_inside_the_ttl_make_one_request(meter_factory, monkeypatch):
    with FakeElectricityMaps(token=TOKEN, intensity=300.0) as fake:
        live_env(monkeypatch, fake.url, METER_CARBON_REFRESH_S="0.01")
        m = meter_factory(300.0, interval_s=0.01)
        m.wait_ready()
        for _ in range(50):
            with m.measure():
                time.sleep(0.005)
        assert len(fake.requests_to("/v3/carbon-intensity")) == 1


def test_live_intensity_change_mid_window(meter_factory, monkeypatch):
    with FakeElectricityMaps(token=TOKEN, intensity=100.0) as fake:
        live_env(monkeypatch, fake.url, METER_CARBON_REFRESH_S="0.02", METER_CARBON_TTL_S="0.05")
        m = meter_factory(300.0, interval_s=0.02)
        m.wait_ready()
        wait_for(lambda: m.accountant.current and m.accountant.current.g_per_kwh == 100.0)
        with m.measure() as w:
            time.sleep(0.6)
            fake.set_intensity("DE", 500.0)
            wait_for(lambda: m.accountant.current.g_per_kwh == 500.0)
            time.sleep(0.6)
    mean = w.result.carbon["intensity_g_per_kwh"]
    # About half the energy at each figure; not either figure alone.
    assert 200.0 < mean < 400.0


def test_failing_server_falls_back_and_records_why(meter_factory, monkeypatch, caplog):
    with FakeElectricityMaps(token=TOKEN, intensity=420.0) as fake:
        fake.fail_next(500, times=100)
        live_env(monkeypatch, fake.url, METER_CARBON_REFRESH_S="0.05")
        m = meter_factory(300.0)
        m.wait_ready()
        wait_for(lambda: any("500" in t for _, t in m.accountant.events))
        time.sleep(0.3)
        with m.measure() as w:
            time.sleep(0.2)
    r = w.result
    de = load_table().get("DE").g_per_kwh
    assert r.carbon["provider"].startswith("embedded:")
    assert r.co2e_g == pytest.approx(r.energy_j / J_PER_KWH * de, rel=1e-6)
    assert any("electricitymaps" in f and "500" in f for f in r.carbon["fallbacks"]), r.carbon
    text = json.dumps(r.to_dict()) + caplog.text
    assert TOKEN not in text


def test_bad_token_is_recorded_not_raised(meter_factory, monkeypatch):
    with FakeElectricityMaps(token="the-right-one", intensity=420.0) as fake:
        live_env(monkeypatch, fake.url)
        m = meter_factory(300.0)
        m.wait_ready()
        wait_for(lambda: any("401" in t or "auth" in t.lower() for _, t in m.accountant.events))
        with m.measure() as w:
            time.sleep(0.1)
    assert any("ELECTRICITYMAPS_TOKEN" in f for f in w.result.carbon["fallbacks"])
    assert TOKEN not in json.dumps(w.result.to_dict())


def test_uk_regional_provider(meter_factory, monkeypatch):
    with FakeUKCarbonIntensity(forecast=180.0, actual=175.0) as fake:
        monkeypatch.setenv("METER_CARBON_PROVIDER", "uk")
        monkeypatch.setenv("METER_CARBON_URL", fake.url)
        m = meter_factory(300.0, zone="GB")
        m.wait_ready()
        wait_for(lambda: m.accountant.current and m.accountant.current.source != "embedded")
        wait_for(lambda: "uk" in m.accountant.current.source)
        with m.measure() as w:
            time.sleep(0.1)
    assert w.result.co2e_g == pytest.approx(w.result.energy_j / J_PER_KWH * 175.0, rel=1e-6)


def test_meter_run_reports_live_figure_and_then_fallback(tmp_path):
    out = tmp_path / "r.jsonl"
    with FakeElectricityMaps(token=TOKEN, intensity=420.0) as fake:
        env = {
            "METER_SIMULATE_GPUS": "300",
            "METER_ZONE": "DE",
            "METER_CARBON_PROVIDER": "electricitymaps",
            "METER_CARBON_URL": fake.url,
            "ELECTRICITYMAPS_TOKEN": TOKEN,
        }
        code = "import time; time.sleep(1.0)"
        ok = run_meter("run", "-o", str(out), "--", sys.executable, "-c", code, **env)
        fake.fail_next(503, times=100)
        failed = run_meter("run", "-o", str(out), "--", sys.executable, "-c", code, **env)
    assert ok.returncode == 0, ok.stderr
    assert failed.returncode == 0, failed.stderr
    live, fallback = list(read_jsonl(out))
    assert live["carbon"]["provider"] == "electricitymaps"
    assert live["co2e_g"] == pytest.approx(live["energy_j"] / J_PER_KWH * 420.0, rel=0.01)
    assert fallback["carbon"]["provider"].startswith("embedded:")
    assert any("503" in f for f in fallback["carbon"]["fallbacks"])
    for text in (out.read_text(), ok.stderr, failed.stderr):
        assert TOKEN not in text
    assert os.environ.get("METER_CARBON_PROVIDER") is None

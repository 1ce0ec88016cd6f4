"""CO2e from measured joules: embedded data offline, per-interval pricing, PUE, market-based,
embodied, what-if pricing, and bad input."""

from __future__ import annotations

import threading
import time

import pytest

from meter import ConfigError, Meter
from meter.carbon.accounting import J_PER_KWH, compare_zones, project
from meter.carbon.embodied import HOPPER, SECONDS_PER_YEAR
from meter.carbon.providers import ConstantProvider, Intensity
from meter.carbon.table import load_table
from meter.testing import SimulatedGPU, simulated_gpus


def g_per_kwh(zone: str) -> float:
    record = load_table().get(zone)
    assert record is not None
    return record.g_per_kwh


def test_default_configuration_prices_offline_from_the_embedded_table(
    meter_factory, no_network, monkeypatch
):
    monkeypatch.setenv("METER_ZONE", "PL")
    m = meter_factory(300.0, carbon=True)
    with m.measure() as w:
        time.sleep(0.3)
    r = w.result
    assert r.carbon is not None
    assert r.carbon["zone"] == "PL" and r.carbon["zone_from"] == "METER_ZONE"
    assert r.carbon["provider"].startswith("embedded:electricitymaps")
    assert r.carbon["fallbacks"] == []
    expected = r.energy_j / J_PER_KWH * g_per_kwh("PL")
    assert r.co2e_g == pytest.approx(expected, rel=1e-6)
    assert r.carbon["intensity_g_per_kwh"] == pytest.approx(g_per_kwh("PL"), rel=1e-6)
    assert r.co2e_market_g is None  # nothing configured for a market-based figure
    d = r.devices["gpu:0"]
    assert d.co2e_g == pytest.approx(expected, rel=1e-6)


def test_no_zone_falls_back_to_world_average_with_a_warning(meter_factory, monkeypatch):
    for var in ("METER_ZONE", "AWS_REGION", "AWS_DEFAULT_REGION", "GOOGLE_CLOUD_REGION"):
        monkeypatch.delenv(var, raising=False)
    m = meter_factory(300.0)
    assert m.accountant is not None
    assert m.accountant.zone.how == "world"
    assert any("METER_ZONE" in w for w in m.warnings)


def test_cloud_region_resolves_through_the_mapping(meter_factory, monkeypatch):
    monkeypatch.delenv("METER_ZONE", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    m = meter_factory(300.0)
    assert m.accountant.zone.key == "DE"
    assert m.accountant.zone.how.startswith("cloud")


class SwitchingProvider:
    """Offline test double: one intensity before ``switch_at`` (wall time), another after."""

    name = "switching"
    live = False

    def __init__(self, before: float, after: float, switch_at: float) -> None:
        self.before, self.after, self.switch_at = before, after, switch_at

    def intensity(self, zone: str, at: float | None = None) -> Intensity:
        now = time.time() if at is None else at
        g = self.before if now < self.switch_at else self.after
        return Intensity(g_per_kwh=g, zone=zone, source=self.name, at=now)


def test_intensity_change_inside_a_window_is_priced_per_interval(meter_factory):
    gpu = SimulatedGPU(360.0)
    switch_at = time.time() + 10.0  # placeholder, set before the window below
    provider = SwitchingProvider(100.0, 500.0, switch_at)
    m = meter_factory(
        gpu, zone="DE", carbon_provider=provider, carbon_refresh_s=0.01, interval_s=0.02
    )
    m.wait_ready()
    provider.switch_at = time.time() + 0.5
    with m.measure() as w:
        time.sleep(1.0)
    r = w.result
    split = provider.switch_at - r.start_time
    before_j = 360.0 * split
    after_j = r.energy_j - before_j
    expected = (before_j * 100.0 + after_j * 500.0) / J_PER_KWH
    assert r.co2e_g == pytest.approx(expected, rel=0.05)
    # Neither intensity alone would give that figure.
    assert r.co2e_g > 1.5 * r.energy_j * 100.0 / J_PER_KWH
    assert r.co2e_g < 0.8 * r.energy_j * 500.0 / J_PER_KWH
    assert 100.0 < r.carbon["intensity_g_per_kwh"] < 500.0


def test_pue_scales_location_based_figure(meter_factory):
    m1 = meter_factory(300.0, zone="FR", pue=1.5)
    with m1.measure() as w:
        time.sleep(0.2)
    r = w.result
    assert r.carbon["pue"] == 1.5
    assert r.co2e_g == pytest.approx(r.energy_j / J_PER_KWH * g_per_kwh("FR") * 1.5, rel=1e-6)


def test_market_based_from_renewable_share_and_contract(meter_factory):
    m = meter_factory(300.0, zone="DE", renewable_share=0.8)
    with m.measure() as w:
        time.sleep(0.2)
    r = w.result
    assert r.co2e_market_g == pytest.approx(0.2 * r.co2e_g, rel=1e-6)
    assert "80%" in r.carbon["market_basis"]

    m2 = meter_factory(300.0, zone="DE", market_factor_g_per_kwh=50.0)
    with m2.measure() as w2:
        time.sleep(0.2)
    r2 = w2.result
    assert r2.co2e_market_g == pytest.approx(r2.energy_j / J_PER_KWH * 50.0, rel=1e-6)
    assert r2.co2e_market_g < r2.co2e_g


def test_google_cloud_zone_gives_a_cfe_market_figure(meter_factory):
    m = meter_factory(300.0, zone="gcp:europe-west4")
    record = load_table().get("gcp:europe-west4")
    assert record is not None and record.cfe_share is not None
    with m.measure() as w:
        time.sleep(0.2)
    r = w.result
    assert r.co2e_market_g == pytest.approx(r.co2e_g * (1 - record.cfe_share), rel=1e-6)
    assert "CFE" in r.carbon["market_basis"]


def test_embodied_amortised_by_time_used(meter_factory):
    m = meter_factory(SimulatedGPU(300.0))  # "Simulated NVIDIA H100": the Hopper default
    with m.measure() as w:
        time.sleep(0.3)
    r = w.result
    per_s = HOPPER.kg_co2e * 1000 / (HOPPER.lifetime_years * SECONDS_PER_YEAR)
    assert r.embodied_co2e_g == pytest.approx(per_s * r.duration_s, rel=1e-6)
    assert r.devices["gpu:0"].embodied_co2e_g == pytest.approx(r.embodied_co2e_g)

    m2 = meter_factory(300.0, embodied={"gpu:0": (1000.0, 1.0)})
    with m2.measure() as w2:
        time.sleep(0.1)
    r2 = w2.result
    assert r2.embodied_co2e_g == pytest.approx(1e6 / SECONDS_PER_YEAR * r2.duration_s, rel=1e-6)

    m3 = meter_factory(300.0, embodied=False)
    with m3.measure() as w3:
        pass
    assert w3.result.embodied_co2e_g is None


def test_shared_windows_split_co2e_like_energy(meter_factory):
    m = meter_factory(300.0, zone="DE")
    m.wait_ready()
    results = []

    def req() -> None:
        with m.measure("r", group="g") as w:
            time.sleep(0.3)
        results.append(w.result)

    threads = [threading.Thread(target=req) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total_e = sum(r.energy_j for r in results)
    total_c = sum(r.co2e_g for r in results)
    assert total_c == pytest.approx(total_e / J_PER_KWH * g_per_kwh("DE"), rel=1e-6)


def test_record_carries_carbon_fields(meter_factory):
    m = meter_factory(300.0, zone="FR", renewable_share=0.5)
    with m.measure() as w:
        time.sleep(0.05)
    d = w.result.to_dict()
    assert {"co2e_g", "co2e_market_g", "embodied_co2e_g", "carbon"} <= set(d)
    assert d["carbon"]["zone"] == "FR"
    assert "co2e_g" in d["devices"]["gpu:0"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"pue": -1.2}, "PUE"),
        ({"pue": 0.5}, "at least 1.0"),
        ({"renewable_share": 1.5}, "between 0 and 1"),
        ({"renewable_share": -0.1}, "between 0 and 1"),
        ({"market_factor_g_per_kwh": -3}, ">= 0"),
        ({"renewable_share": 0.5, "market_factor_g_per_kwh": 10}, "not both"),
        ({"zone": "Germanyy"}, "unknown zone"),
        ({"embodied": {"gpu:9": (1.0, 1.0)}}, "gpu:9"),
        ({"embodied": {"gpu:0": (-1.0, 3.0)}}, "kgCO2e"),
    ],
)
def test_bad_carbon_input_fails_fast(kwargs, words):
    with simulated_gpus([300.0]), pytest.raises(ConfigError) as info:
        Meter(cpu=False, **kwargs)
    assert words in str(info.value)


def test_bad_env_fails_fast(monkeypatch):
    monkeypatch.setenv("METER_PUE", "-2")
    with simulated_gpus([300.0]), pytest.raises(ConfigError, match="METER_PUE"):
        Meter(cpu=False, zone="DE")


def test_compare_zones_what_if():
    prices = compare_zones(J_PER_KWH, ["FR", "pl", "US-TEX-ERCO"], pue=1.2)
    assert [p.zone for p in prices] == ["FR", "PL", "US-TEX-ERCO"]
    for p in prices:
        assert p.co2e_g == pytest.approx(g_per_kwh(p.zone) * 1.2)
    fr, pl, _ = prices
    assert fr.co2e_g < pl.co2e_g
    with pytest.raises(ConfigError, match="unknown zone"):
        compare_zones(1.0, ["Atlantis"])


def test_project_per_unit_to_daily_and_yearly():
    p = project(36.0, 100_000, g_per_kwh=500.0, pue=1.1)  # 36 J per request
    assert p.daily_kwh == pytest.approx(1.0)
    assert p.yearly_kwh == pytest.approx(365.0)
    assert p.daily_co2e_kg == pytest.approx(0.55)
    assert p.yearly_co2e_kg == pytest.approx(0.55 * 365)
    by_zone = project(36.0, 100_000, zone="FR")
    assert by_zone.g_per_kwh == g_per_kwh("FR")
    with pytest.raises(ConfigError):
        project(-1.0, 10, g_per_kwh=100)


def test_constant_provider_is_used_as_given(meter_factory):
    m = meter_factory(300.0, zone="DE", carbon_provider=ConstantProvider(1000.0, zone="DE"))
    with m.measure() as w:
        time.sleep(0.1)
    r = w.result
    assert r.co2e_g == pytest.approx(r.energy_j / J_PER_KWH * 1000.0, rel=1e-6)
    assert r.carbon["provider"] == "constant"

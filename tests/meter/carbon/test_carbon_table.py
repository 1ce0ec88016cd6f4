"""The embedded carbon-intensity table: the build script, the shipped file, `Table`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from meter.carbon.table import WORLD_KEY, Table, ZoneRecord, load_table

REPO = Path(__file__).resolve().parents[3]
DATA_DIR = REPO.parent / "shared" / "data"
SCRIPT = REPO / "scripts" / "build_carbon_table.py"
SHIPPED = resources.files("meter.carbon.data")

needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(), reason=f"raw source data not present at {DATA_DIR}"
)


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_carbon_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def em_2025() -> dict[str, Any]:
    if not DATA_DIR.is_dir():
        pytest.skip(f"raw source data not present at {DATA_DIR}")
    return json.loads((DATA_DIR / "electricitymaps-yearly-2025.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def table() -> Table:
    return load_table()


# -- the build script -------------------------------------------------------------------------


@needs_data
def test_build_reproduces_the_shipped_files_byte_for_byte(
    script: ModuleType, tmp_path: Path
) -> None:
    for out in (tmp_path / "a", tmp_path / "b"):
        assert script.main([str(DATA_DIR), "--out", str(out)]) == 0
    for name in ("intensity.json", "ATTRIBUTION.md"):
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes(), f"{name} is not deterministic"
        assert first == SHIPPED.joinpath(name).read_bytes(), (
            f"shipped {name} is stale: run `python scripts/build_carbon_table.py`"
        )


@needs_data
def test_build_falls_back_to_2024_where_2025_is_missing(script: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    path = data / "electricitymaps-yearly-2025.json"
    em = json.loads(path.read_text("utf-8"))
    em["DE"]["carbonIntensity"]["value"] = None
    path.write_text(json.dumps(em), "utf-8")
    table, _ = script.build(data)
    em_2024 = json.loads((data / "electricitymaps-yearly-2024.json").read_text("utf-8"))
    assert table["zones"]["DE"]["year"] == 2024
    assert table["zones"]["DE"]["g_per_kwh"] == em_2024["DE"]["carbonIntensity"]["value"]
    assert table["zones"]["FR"]["year"] == 2025


def test_shipped_file_is_compact_and_attributed() -> None:
    raw = SHIPPED.joinpath("intensity.json").read_bytes()
    assert len(raw) < 100_000
    attribution = SHIPPED.joinpath("ATTRIBUTION.md").read_text("utf-8")
    for needle in ("ODbL 1.0", "CC BY-SA 4.0", "Apache-2.0", "US government work", "CO2.js"):
        assert needle in attribution


# -- the shipped table ------------------------------------------------------------------------


def test_all_electricity_maps_zones_are_there_and_plausible(table: Table) -> None:
    em = [r for r in table if r.source == "electricitymaps"]
    assert len(em) >= 352
    assert {r.source for r in table} == {"electricitymaps", "ember", "egrid", "gcp"}
    for r in table:
        assert 0 < r.g_per_kwh <= 1500, r
        assert r.name and isinstance(r.year, int) and 2020 <= r.year <= 2030, r
        for share in (r.renewable_share, r.carbon_free_share, r.cfe_share):
            assert share is None or 0 <= share <= 1, r


@needs_data
@pytest.mark.parametrize("key", ["DE", "FR", "PL", "US-CAL-CISO", "JP-TK"])
def test_electricity_maps_zones_carry_the_2025_figures(
    table: Table, em_2025: dict[str, Any], key: str
) -> None:
    record = table.get(key)
    source = em_2025[key]
    assert record is not None
    assert record.source == "electricitymaps" and record.year == 2025
    assert record.g_per_kwh == source["carbonIntensity"]["value"]
    assert record.renewable_share == pytest.approx(source["renewableEnergy"]["value"] / 100)
    assert record.carbon_free_share == pytest.approx(source["carbonFreeEnergy"]["value"] / 100)
    assert record.country == key[:2]


def test_egrid_is_converted_from_lb_per_mwh(table: Table) -> None:
    camx = table.get("US-EGRID-CAMX")
    assert camx is not None and camx.source == "egrid" and camx.year == 2022
    assert camx.g_per_kwh == pytest.approx(497.443 * 0.45359237, abs=0.01)
    assert camx.g_per_kwh == pytest.approx(225.6, abs=0.05)
    assert camx.note is not None and "CO2 only" in camx.note


def test_gcp_regions_carry_cfe_and_their_grid_zone(table: Table) -> None:
    nl = table.get("gcp:europe-west4")
    assert nl is not None
    assert (nl.source, nl.g_per_kwh, nl.cfe_share, nl.grid_zone) == ("gcp", 208.81, 0.83, "NL")
    gcp = [r for r in table if r.source == "gcp"]
    assert len(gcp) >= 40
    for r in gcp:
        assert r.cfe_share is not None and r.grid_zone is not None, r
        grid = table.get(r.grid_zone)
        assert grid is not None and grid.source == "electricitymaps", r


def test_ember_only_fills_gaps_and_gives_the_world_average(table: Table) -> None:
    world = table.get(WORLD_KEY)
    assert world is not None and world.source == "ember" and 300 < world.g_per_kwh < 600
    assert table.get("EMBER:EU") is not None
    ukraine = table.get("UA")  # no Electricity Maps zone
    assert ukraine is not None and ukraine.source == "ember" and ukraine.iso3 == "UKR"
    em_countries = {r.country for r in table if r.source == "electricitymaps"}
    for r in table:
        if r.source == "ember" and not r.key.startswith("EMBER:"):
            assert r.country == r.key and r.country not in em_countries, r


def test_iso3_codes_map_to_iso2(table: Table) -> None:
    expected = {"DEU": "DE", "GBR": "GB", "USA": "US", "COD": "CD", "COG": "CG", "KOR": "KR"}
    for iso3, iso2 in expected.items():
        assert table.iso3[iso3] == iso2
    germany = table.get("DE")
    assert germany is not None and germany.iso3 == "DEU"


def test_search_ignores_case_and_accents(table: Table) -> None:
    assert [r.key for r in table.search("california iso")] == ["US-CAL-CISO"]
    assert "JP-TK" in [r.key for r in table.search("TOKYO")]
    keys = [r.key for r in table.search("us-egrid-")]
    assert len(keys) >= 27 and keys == sorted(keys)


# -- Table ------------------------------------------------------------------------------------


def test_table_basics() -> None:
    t = Table(
        [
            ZoneRecord("YY", "Why", 200.0, 2024, "ember"),
            ZoneRecord("XX", "Example", 100.0, 2025, "electricitymaps", cfe_share=0.5),
        ],
        iso3={"XXX": "XX"},
    )
    assert len(t) == 2 and "XX" in t and "xx" not in t and "ZZ" not in t
    assert [r.key for r in t] == ["XX", "YY"]
    assert t.get("XX") == ZoneRecord("XX", "Example", 100.0, 2025, "electricitymaps", cfe_share=0.5)
    assert t.get("ZZ") is None
    assert t.match_key("xx") == "XX"
    assert [r.key for r in t.search("EXAM")] == ["XX"]
    record = t.get("XX")
    assert record is not None and record.to_dict() == {
        "key": "XX",
        "name": "Example",
        "g_per_kwh": 100.0,
        "year": 2025,
        "source": "electricitymaps",
        "cfe_share": 0.5,
    }


def test_load_table_is_cached(table: Table) -> None:
    assert load_table() is table


@pytest.mark.parametrize(
    "imports", ["import meter", "import meter, meter.carbon.zones, meter.carbon.cli_zones"]
)
def test_importing_does_not_load_the_table(imports: str) -> None:
    code = (
        f"{imports}\n"
        "import sys\n"
        "mod = sys.modules.get('meter.carbon.table')\n"
        "print(mod is None or mod.load_table.cache_info().currsize == 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True", out.stderr

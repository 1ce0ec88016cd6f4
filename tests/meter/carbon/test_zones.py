"""Zone names, cloud regions, the resolution order, and ``meter zones``."""

from __future__ import annotations

import json
import re

import pytest

from meter.carbon.cli_zones import zones_command
from meter.carbon.table import WORLD_KEY, Table, load_table
from meter.carbon.zones import (
    CLOUD_ENV_VARS,
    CLOUD_REGIONS,
    close_zones,
    normalise_zone,
    resolve_zone,
    search_zones,
)
from meter.errors import ConfigError

#: Zone resolution is offline: any attempt to reach the network fails the test.
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def table() -> Table:
    return load_table()


# -- cloud regions ----------------------------------------------------------------------------


def test_every_cloud_region_maps_to_a_zone_in_the_table(table: Table) -> None:
    missing = {alias: key for alias, key in CLOUD_REGIONS.items() if key not in table}
    assert missing == {}


def test_cloud_region_coverage(table: Table) -> None:
    clouds = [alias.partition(":")[0] for alias in CLOUD_REGIONS]
    assert clouds.count("aws") >= 15 and clouds.count("azure") >= 20
    gcp_records = {r.key for r in table if r.source == "gcp"}
    assert gcp_records == {a for a in CLOUD_REGIONS if a.startswith("gcp:")}
    assert all(CLOUD_REGIONS[k] == k for k in gcp_records)  # keeps Google's CFE share
    assert {cloud for _, cloud in CLOUD_ENV_VARS} == {"aws", "gcp", "azure"}


# -- normalise_zone ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        (" fr ", "FR"),
        ("us-cal-ciso", "US-CAL-CISO"),
        ("JP-TK", "JP-TK"),
        ("DEU", "DE"),
        ("deu", "DE"),
        ("GB", "GB"),
        ("GBR", "GB"),
        ("UK", "GB"),
        ("USA", "US"),
        ("UKR", "UA"),  # Ember fallback: no Electricity Maps zone
        ("CHL", "CL-SEN"),  # split country with a documented representative
        ("CL", "CL-SEN"),
        ("aws:us-east-1", "US-MIDA-PJM"),
        ("AWS:EU-WEST-3", "FR"),
        ("aws:us-east-1a", "US-MIDA-PJM"),  # an availability zone
        ("gcp:europe-west4", "gcp:europe-west4"),
        ("gcp:europe-west4-a", "gcp:europe-west4"),  # a GCP zone
        ("azure:westeurope", "NL"),
        ("azure:West Europe", "NL"),  # App Service display name
        ("us-egrid-camx", "US-EGRID-CAMX"),
        ("ember:world", WORLD_KEY),
        ("EMBER:EU", "EMBER:EU"),
        ("ember:middle east", "EMBER:Middle-East"),
    ],
)
def test_normalise_zone(text: str, key: str, table: Table) -> None:
    assert normalise_zone(text, table) == key
    assert normalise_zone(text) == key  # default table


def test_unknown_zone_suggests_close_matches(table: Table) -> None:
    with pytest.raises(ConfigError) as e:
        normalise_zone("GERMANY", table)
    assert e.value.setting == "zone"
    message = str(e.value)
    assert message.startswith("unknown zone 'GERMANY'; did you mean DE (Germany)")
    assert "meter zones QUERY" in message


def test_unknown_zone_suggests_at_most_five(table: Table) -> None:
    with pytest.raises(ConfigError) as e:
        normalise_zone("us-east-1", table)  # a region without its cloud prefix
    message = str(e.value)
    assert "aws:us-east-1 (-> US-MIDA-PJM)" in message
    suggestions = message.split("did you mean ", 1)[1].split("?", 1)[0]
    named = re.findall(r"(?:^|, )(\S+) \(", suggestions)
    keys = [k for k in named if k in table or k in CLOUD_REGIONS]
    assert keys[0] == "aws:us-east-1" and len(keys) <= 5


@pytest.mark.parametrize("text", ["xyzzy", "ZZ", "QQQ", "aws:mars-north-1", "  "])
def test_unknown_zones_fail(text: str, table: Table) -> None:
    with pytest.raises(ConfigError) as e:
        normalise_zone(text, table)
    assert e.value.setting == "zone"
    assert "meter zones" in str(e.value)


def test_split_country_without_representative_lists_its_zones(table: Table) -> None:
    for text in ("RU", "rus"):
        with pytest.raises(ConfigError) as e:
            normalise_zone(text, table)
        assert all(z in str(e.value) for z in ("RU-1", "RU-2", "RU-AS"))


# -- resolve_zone -----------------------------------------------------------------------------


ALL = {"METER_ZONE": "FR", "AWS_REGION": "eu-central-1"}


def test_resolution_order() -> None:
    r = resolve_zone("PL", default="SE", environ=ALL)
    assert (r.key, r.how, r.requested, r.warning) == ("PL", "argument", "PL", None)
    assert r.record.key == "PL"
    r = resolve_zone(default="SE", environ=ALL)
    assert (r.key, r.how, r.requested) == ("FR", "METER_ZONE", "FR")
    r = resolve_zone(default="SE", environ={"AWS_REGION": "eu-central-1"})
    assert (r.key, r.how, r.requested) == ("DE", "cloud:AWS_REGION", "aws:eu-central-1")
    r = resolve_zone(default="SE", environ={})
    assert (r.key, r.how, r.requested, r.warning) == ("SE", "default", "SE", None)
    r = resolve_zone(environ={})
    assert (r.key, r.how, r.requested) == (WORLD_KEY, "world", None)
    assert r.warning is not None
    assert "METER_ZONE=DE" in r.warning and "meter zones" in r.warning


def test_resolution_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, _ in CLOUD_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("METER_ZONE", "us-cal-ciso")
    r = resolve_zone()
    assert (r.key, r.how, r.requested) == ("US-CAL-CISO", "METER_ZONE", "us-cal-ciso")


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("AWS_DEFAULT_REGION", "ap-northeast-1", "JP-TK"),
        ("GOOGLE_CLOUD_REGION", "europe-west4", "gcp:europe-west4"),
        ("CLOUDSDK_COMPUTE_REGION", "us-central1", "gcp:us-central1"),
        ("FUNCTION_REGION", "europe-west1", "gcp:europe-west1"),
        ("AZURE_REGION", "westeurope", "NL"),
        ("REGION_NAME", "West Europe", "NL"),
        ("AZURE_LOCATION", "swedencentral", "SE-SE3"),
    ],
)
def test_each_cloud_variable(var: str, value: str, key: str) -> None:
    r = resolve_zone(environ={var: value})
    assert (r.key, r.how, r.warning) == (key, f"cloud:{var}", None)


def test_gcp_region_keeps_cfe_and_grid_zone() -> None:
    r = resolve_zone(environ={"GOOGLE_CLOUD_REGION": "europe-west4"})
    assert r.record.cfe_share == 0.83 and r.record.grid_zone == "NL"


def test_unmapped_cloud_region_warns_and_falls_through() -> None:
    r = resolve_zone(default="FR", environ={"AWS_REGION": "mars-north-1"})
    assert (r.key, r.how) == ("FR", "default")
    assert r.warning is not None and "AWS_REGION" in r.warning and "mars-north-1" in r.warning

    r = resolve_zone(environ={"AWS_REGION": "mars-north-1", "AZURE_REGION": "francecentral"})
    assert (r.key, r.how) == ("FR", "cloud:AZURE_REGION")
    assert r.warning is not None and "mars-north-1" in r.warning

    r = resolve_zone(environ={"AWS_REGION": "mars-north-1"})
    assert (r.key, r.how) == (WORLD_KEY, "world")
    assert r.warning is not None and "mars-north-1" in r.warning and "METER_ZONE" in r.warning


def test_empty_variables_are_unset() -> None:
    r = resolve_zone(environ={"METER_ZONE": " ", "AWS_REGION": ""}, default="DE")
    assert (r.key, r.how) == ("DE", "default")


def test_bad_explicit_values_fail_fast() -> None:
    with pytest.raises(ConfigError) as e:
        resolve_zone("Germany", environ={"METER_ZONE": "FR"})
    assert e.value.setting == "zone" and "DE (Germany)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_zone(environ={"METER_ZONE": "nowhere", "AWS_REGION": "eu-west-3"})
    assert e.value.setting == "METER_ZONE" and "METER_ZONE" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_zone(default="nowhere", environ={})
    assert e.value.setting == "zone"


# -- meter zones ------------------------------------------------------------------------------


def test_zones_lists_everything(capsys: pytest.CaptureFixture[str], table: Table) -> None:
    assert zones_command(None, as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    keys = [z["key"] for z in out["zones"]]
    assert len(keys) == len(table) and keys == sorted(keys)


def test_zones_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert zones_command("europe-west4", as_json=False) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split() == ["ZONE", "NAME", "G/KWH", "YEAR", "SOURCE", "CFE"]
    assert row.startswith("gcp:europe-west4") and "208.8" in row and "83%" in row
    assert "Electricity Maps (ODbL-1.0)" in out


def test_zones_query_by_country_code_and_cloud_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert zones_command("DEU", as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["matches"][0] == {"key": "DE", "zone": "DE", "match": "exact"}
    assert [z["key"] for z in out["zones"]] == ["DE", "gcp:europe-west3", "gcp:europe-west10"]
    assert out["aliases"] == {"aws:eu-central-1": "DE", "azure:germanywestcentral": "DE"}
    assert zones_command("aws:us-east-1", as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["aliases"] == {"aws:us-east-1": "US-MIDA-PJM"}
    assert [z["key"] for z in out["zones"]] == ["US-MIDA-PJM"]  # its figures come along
    assert zones_command("aws:us-east-1", as_json=False) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[:3] == ["aws:us-east-1", "->", "US-MIDA-PJM"]


def test_zones_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert zones_command("germny", as_json=False) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "DE (Germany)" in captured.err


# -- search: what a person meant first --------------------------------------------------------


def keys(query: str) -> list[str]:
    return [m.key for m in search_zones(query)]


@pytest.mark.parametrize(("query", "first"), [("DE", "DE"), ("de", "DE"), ("FR", "FR")])
def test_search_puts_the_country_code_first(query: str, first: str) -> None:
    # Any substring used to come first in key order: Flinders Island (AU-TAS-FI) for DE, the
    # Central African Republic (CF) for FR.
    assert keys(query)[0] == first
    assert search_zones(query)[0].match == "exact"


def test_search_by_country_name_gives_its_zone_then_its_cloud_regions(table: Table) -> None:
    matches = search_zones("germany", table)
    assert [(m.key, m.match) for m in matches] == [
        ("DE", "exact"),
        ("aws:eu-central-1", "cloud region"),
        ("gcp:europe-west3", "cloud region"),
        ("gcp:europe-west10", "cloud region"),
        ("azure:germanywestcentral", "cloud region"),
    ]
    assert [m.zone for m in matches] == ["DE", "DE", *keys("germany")[2:4], "DE"]
    assert keys("Germany") == keys("GERMANY") == keys("DEU")


def test_search_lists_sub_zones_then_cloud_regions_then_names() -> None:
    found = keys("FR")
    assert found[:5] == ["FR", "FR-COR", "aws:eu-west-3", "gcp:europe-west9", "azure:francecentral"]
    # Names: a word that starts with the query before a mere substring.
    assert found.index("GF") < found.index("CF")  # French Guiana before Central African Rep.
    found = keys("DE")
    assert found.index("CD") < found.index("BD")  # Democratic Rep. of the Congo, Bangladesh
    assert found.index("DK") < found.index("AU-TAS-FI")  # Denmark before Flinders Island
    kinds = [m.match for m in search_zones("DE")]
    assert kinds == sorted(
        kinds, key=["exact", "sub-zone", "cloud region", "word", "substring"].index
    )


def test_search_a_country_split_into_zones_lists_them() -> None:
    assert keys("RU")[:3] == ["RU-1", "RU-2", "RU-AS"]
    assert {m.match for m in search_zones("RU")[:3]} == {"sub-zone"}


def test_search_a_grid_zone_lists_the_cloud_regions_on_it() -> None:
    found = keys("us-mida-pjm")
    assert found[0] == "US-MIDA-PJM"
    assert {"aws:us-east-1", "gcp:us-east4", "azure:eastus"} <= set(found)


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("aws:eu-central-1a", "aws:eu-central-1"),  # an availability zone
        ("eu-central-1", "aws:eu-central-1"),  # a region without its cloud
        ("West Europe", "azure:westeurope"),  # Azure's display name
        ("europe-west4", "gcp:europe-west4"),
        ("UK", "GB"),
        ("tokyo", "JP-TK"),  # by name, accents folded (Tōkyō)
    ],
)
def test_search_finds_what_normalise_zone_accepts(query: str, key: str) -> None:
    assert keys(query)[0] == key


def test_search_by_name_finds_cloud_regions_by_their_country() -> None:
    found = keys("germ")  # no exact match: word starts
    assert found[:2] == ["DE", "aws:eu-central-1"] and "gcp:europe-west3" in found


def test_search_without_query_lists_every_zone(table: Table) -> None:
    assert [m.key for m in search_zones(None, table)] == table.keys() == keys("  ")


def test_search_with_no_match_says_so_and_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert search_zones("narnia") == []
    assert zones_command("narnia", as_json=False) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("meter: no zone matches 'narnia'; did you mean ")
    assert "unknown zone" not in captured.err
    suggestions = close_zones("narnia")
    assert suggestions and all(s in captured.err for s in suggestions)


def test_zones_text_lists_the_best_match_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert zones_command("DE", as_json=False) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:2] == ["DE", "Germany"]
    assert zones_command("germany", as_json=False) == 0
    out = capsys.readouterr().out
    assert [row.split()[0] for row in out.splitlines()[1:6]] == keys("germany")
    assert "-> DE (Germany)" in out.splitlines()[2]
    assert "1 zone, 4 cloud regions." in out

#!/usr/bin/env python3
"""Build the embedded carbon-intensity table that ships in ``meter/carbon/data``.

Reads the raw public files in ``../shared/data`` (see SOURCES.md there) and writes:

* ``intensity.json``: one compact JSON object, keys sorted, one zone per line (for readable
  diffs). ``zones`` maps a zone key to its record; ``iso3`` maps ISO 3166 alpha-3 country
  codes to the alpha-2 codes used as keys; ``meta`` says where each figure comes from.
* ``ATTRIBUTION.md``: sources, years and licences, to ship beside the table.

Zone keys:

* Electricity Maps zone keys as they are (``DE``, ``US-CAL-CISO``, ``JP-TK``): the 2025
  yearly average, or the 2024 one where 2025 is missing. The primary source.
* Ember: ISO alpha-2 keys only for countries with no Electricity Maps zone at all (the
  alpha-3 code stays in the record), and world regions as ``EMBER:<Region>``
  (``EMBER:World`` is the last-resort default).
* US EPA eGRID subregions as ``US-EGRID-<SUBREGION>``, converted lb/MWh -> g/kWh. CO2 only.
* Google Cloud regions as ``gcp:<region>``, Google's grid intensity and CFE share, plus
  ``grid_zone``: the Electricity Maps zone of that region (``GCP_GRID_ZONES`` below).

Standard library only, no network. The output is deterministic: running it twice on the
same inputs gives identical bytes (a test checks that the shipped file is reproduced).

    python scripts/build_carbon_table.py [DATA_DIR] [--out OUT_DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
DEFAULT_OUT_DIR = REPO / "meter" / "carbon" / "data"

EM_FILES = {2025: "electricitymaps-yearly-2025.json", 2024: "electricitymaps-yearly-2024.json"}
EMBER_FILE = "ember-country-average-intensities.json"
EGRID_FILE = "egrid-subregion-co2-2022.csv"
GCP_FILE = "google-cloud-region-carbon-2024.csv"

FORMAT_VERSION = 1
LB_PER_MWH_TO_G_PER_KWH = 0.45359237  # 1 lb = 453.59237 g, 1 MWh = 1000 kWh

# ISO alpha-3 -> alpha-2 where matching Ember's country names against Electricity Maps'
# national zone names does not work (different spelling, no EM zone, or no Ember row).
# Everything else is matched by name, see iso3_to_iso2().
ISO3_EXPLICIT = {
    "ALA": "AX",  # Åland Islands (no Ember row)
    "ASM": "AS",  # American Samoa (no EM zone)
    "BIH": "BA",  # "Bosnia Herzegovina" / "Bosnia and Herzegovina"
    "BRN": "BN",  # "Brunei Darussalam" / "Brunei"
    "CHL": "CL",  # Chile: EM has only CL-SEN, no national key
    "CIV": "CI",  # "Cote d'Ivoire" / "Ivory Coast"
    "COD": "CD",  # "Congo (DRC)" / "Democratic Republic of the Congo"
    "COK": "CK",  # Cook Islands (no EM zone)
    "CUW": "CW",  # Curaçao (no Ember row)
    "FLK": "FK",  # "Falkland Islands [Malvinas]"
    "FSM": "FM",  # Micronesia (no Ember row)
    "GBR": "GB",  # "United Kingdom" / EM "Great Britain" (GB-NIR is separate)
    "GIB": "GI",  # Gibraltar (no Ember row)
    "GRD": "GD",  # Grenada (no EM zone)
    "HKG": "HK",  # "Hong Kong (SAR of China)"
    "IND": "IN",  # "India" / EM "Mainland India"
    "KIR": "KI",  # Kiribati (no EM zone)
    "KNA": "KN",  # Saint Kitts and Nevis (no EM zone)
    "LAO": "LA",  # "Lao" / "Laos"
    "MAC": "MO",  # "Macao (SAR of China)"
    "MSR": "MS",  # Montserrat (no EM zone)
    "MYT": "YT",  # Mayotte (no Ember row)
    "NRU": "NR",  # Nauru (no EM zone)
    "PHL": "PH",  # "The Philippines"
    "PLW": "PW",  # Palau (no Ember row)
    "PSE": "PS",  # "Palestine (State of)"
    "RUS": "RU",  # Russia: EM has RU-1, RU-2, RU-AS, no national key
    "SGS": "GS",  # South Georgia and the South Sandwich Islands (no Ember row)
    "TCA": "TC",  # Turks and Caicos Islands (no EM zone)
    "TLS": "TL",  # Timor-Leste (no Ember row)
    "TUR": "TR",  # "Türkiye" / "Turkey"
    "TWN": "TW",  # "Taiwan (China)"
    "TZA": "TZ",  # "Tanzania (the United Republic of)"
    "UKR": "UA",  # Ukraine (no EM zone)
    "VGB": "VG",  # British Virgin Islands (no EM zone)
    "VIR": "VI",  # US Virgin Islands
    "VNM": "VN",  # "Viet Nam" / "Vietnam"
    "XKX": "XK",  # Kosovo (user-assigned code, used by both sources)
}

# Google Cloud region -> the Electricity Maps zone its data centre draws from. City from
# Google's CSV; the zone is the balancing area / bidding zone serving that place.
GCP_GRID_ZONES = {
    "africa-south1": "ZA",  # Johannesburg, South Africa (one national grid, Eskom)
    "asia-east1": "TW",  # Changhua County, Taiwan
    "asia-east2": "HK",  # Hong Kong
    "asia-northeast1": "JP-TK",  # Tokyo, TEPCO area
    "asia-northeast2": "JP-KN",  # Osaka, Kansai area
    "asia-northeast3": "KR",  # Seoul, South Korea
    "asia-south1": "IN-WE",  # Mumbai, Western regional grid
    "asia-south2": "IN-NO",  # Delhi, Northern regional grid
    "asia-southeast1": "SG",  # Singapore
    "asia-southeast2": "ID",  # Jakarta, Indonesia
    "australia-southeast1": "AU-NSW",  # Sydney, New South Wales (NEM region)
    "australia-southeast2": "AU-VIC",  # Melbourne, Victoria (NEM region)
    "europe-central2": "PL",  # Warsaw, Poland
    "europe-north1": "FI",  # Hamina, Finland
    "europe-north2": "SE-SE3",  # Stockholm, bidding zone SE3
    "europe-southwest1": "ES",  # Madrid, Spain (mainland)
    "europe-west1": "BE",  # St. Ghislain, Belgium
    "europe-west2": "GB",  # London, Great Britain
    "europe-west3": "DE",  # Frankfurt, Germany
    "europe-west4": "NL",  # Eemshaven, Netherlands
    "europe-west6": "CH",  # Zürich, Switzerland
    "europe-west8": "IT-NO",  # Milan, North Italy bidding zone
    "europe-west9": "FR",  # Paris, France
    "europe-west10": "DE",  # Berlin, Germany
    "europe-west12": "IT-NO",  # Turin, North Italy bidding zone
    "me-central1": "QA",  # Doha, Qatar
    "me-central2": "SA",  # Dammam, Saudi Arabia
    "me-west1": "IL",  # Tel Aviv, Israel
    "northamerica-northeast1": "CA-QC",  # Montréal, Hydro-Québec
    "northamerica-northeast2": "CA-ON",  # Toronto, Ontario IESO
    "northamerica-south1": "MX",  # Querétaro, Mexico (one EM zone for Mexico)
    "southamerica-east1": "BR-CS",  # São Paulo, South-East/Centre-West subsystem
    "southamerica-west1": "CL-SEN",  # Santiago, Chile's national grid (SEN)
    "us-central1": "US-MIDW-MISO",  # Council Bluffs, Iowa: MidAmerican Energy, in MISO
    "us-central2": "US-CENT-SWPP",  # Pryor, Oklahoma: GRDA, in the Southwest Power Pool
    "us-east1": "US-CAR-SC",  # Moncks Corner, South Carolina: Santee Cooper area
    "us-east2": "US-SE-SOCO",  # Georgia: Southern Company (Georgia Power) area
    "us-east4": "US-MIDA-PJM",  # Ashburn, Northern Virginia: Dominion zone of PJM
    "us-east5": "US-MIDA-PJM",  # Columbus, Ohio: AEP Ohio, in PJM
    "us-south1": "US-TEX-ERCO",  # Dallas, Texas: ERCOT
    "us-west1": "US-NW-BPAT",  # The Dalles, Oregon: Bonneville Power Administration area
    # Los Angeles: CAISO. Parts of the city are LADWP's (US-CAL-LDWP); Google's own figure
    # for the region (169 g) is far closer to CAISO's than to LADWP's.
    "us-west2": "US-CAL-CISO",
    "us-west3": "US-NW-PACE",  # Salt Lake City, Utah: PacifiCorp East (Rocky Mountain Power)
    "us-west4": "US-NW-NEVP",  # Las Vegas, Nevada: Nevada Power (NV Energy)
}

# eGRID subregion acronyms -> names (EPA eGRID technical guide).
EGRID_NAMES = {
    "US": "U.S. average",
    "AKGD": "ASCC Alaska Grid",
    "AKMS": "ASCC Miscellaneous",
    "AZNM": "WECC Southwest",
    "CAMX": "WECC California",
    "ERCT": "ERCOT All",
    "FRCC": "FRCC All",
    "HIMS": "HICC Miscellaneous",
    "HIOA": "HICC Oahu",
    "MROE": "MRO East",
    "MROW": "MRO West",
    "NEWE": "NPCC New England",
    "NWPP": "WECC Northwest",
    "NYCW": "NPCC NYC/Westchester",
    "NYLI": "NPCC Long Island",
    "NYUP": "NPCC Upstate NY",
    "PRMS": "Puerto Rico Miscellaneous",
    "RFCE": "RFC East",
    "RFCM": "RFC Michigan",
    "RFCW": "RFC West",
    "RMPA": "WECC Rockies",
    "SPNO": "SPP North",
    "SPSO": "SPP South",
    "SRMV": "SERC Mississippi Valley",
    "SRMW": "SERC Midwest",
    "SRSO": "SERC South",
    "SRTV": "SERC Tennessee Valley",
    "SRVC": "SERC Virginia/Carolina",
}

SOURCES: dict[str, dict[str, Any]] = {
    "electricitymaps": {
        "name": "Electricity Maps",
        "licence": "ODbL-1.0",
        "url": "https://www.electricitymaps.com/",
        "via": "CO2.js (The Green Web Foundation), data/output/electricity-maps/",
        "unit": "gCO2eq/kWh, lifecycle emission factors, consumption-based, yearly average",
    },
    "ember": {
        "name": "Ember",
        "licence": "CC-BY-SA-4.0",
        "url": "https://ember-energy.org/",
        "via": "CO2.js (The Green Web Foundation), data/output/average-intensities.json",
        "unit": "gCO2/kWh, generation-based, yearly average",
    },
    "egrid": {
        "name": "US EPA eGRID",
        "licence": "US government work (public domain)",
        "url": "https://www.epa.gov/egrid",
        "via": "EPA eGRID2022 summary tables",
        "unit": "lb CO2/MWh converted to g CO2/kWh (x 0.45359237); CO2 only, not CO2e",
    },
    "gcp": {
        "name": "Google Cloud region carbon data",
        "licence": "Apache-2.0",
        "url": "https://github.com/GoogleCloudPlatform/region-carbon-info",
        "via": "Google Cloud region-carbon-info",
        "unit": "gCO2eq/kWh grid intensity; Google CFE share 0..1 (hourly, incl. contracts)",
    },
}


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a name, for matching."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


def _share(item: Any) -> float | None:
    """A ``{"value": 60, "unit": "%"}`` entry as a 0..1 share, or None when missing."""
    if not isinstance(item, Mapping) or item.get("value") is None:
        return None
    if item.get("unit", "%") != "%":
        raise ValueError(f"expected a percentage, got {item!r}")
    return round(float(item["value"]) / 100.0, 4)


def _intensity(item: Any) -> float | None:
    if not isinstance(item, Mapping) or item.get("value") is None:
        return None
    if item.get("unit") != "gCO2eq/kWh":
        raise ValueError(f"expected gCO2eq/kWh, got {item!r}")
    return float(item["value"])


def em_name(key: str, zone: Mapping[str, str]) -> str:
    """``CAISO (California ISO), USA``; ``Tōkyō, Japan``; ``Germany``."""
    name = zone.get("zoneName") or key
    display = zone.get("displayName")
    if display and fold(display) not in fold(name):
        name = f"{name} ({display})"
    country = zone.get("countryName")
    if country and fold(country) not in fold(name):
        name = f"{name}, {country}"
    return name


def load_electricitymaps(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Electricity Maps zones: the newest year with a value, per zone and per field."""
    years = sorted(EM_FILES, reverse=True)
    by_year = {y: json.loads((data_dir / EM_FILES[y]).read_text("utf-8")) for y in years}
    zones: dict[str, dict[str, Any]] = {}
    for key in sorted(set().union(*by_year.values())):
        for year in years:
            entry = by_year[year].get(key)
            if entry is None:
                continue
            g = _intensity(entry.get("carbonIntensity"))
            if g is None:
                continue
            zones[key] = {
                "name": em_name(key, entry.get("zone") or {}),
                "g_per_kwh": g,
                "year": year,
                "source": "electricitymaps",
                "renewable_share": _share(entry.get("renewableEnergy")),
                "carbon_free_share": _share(entry.get("carbonFreeEnergy")),
                "country": key.split("-")[0],
            }
            break
    return zones


def iso3_to_iso2(ember: Mapping[str, Any], em: Mapping[str, Any]) -> dict[str, str]:
    """ISO alpha-3 -> alpha-2: Ember country names matched to Electricity Maps national zone
    names, plus ``ISO3_EXPLICIT``. Fails if a code would map two ways."""
    by_name = {fold(em[k]["name"]): k for k in em if "-" not in k}
    mapping: dict[str, str] = {}
    for code, row in ember.items():
        if not row.get("country_code"):
            continue
        if code in ISO3_EXPLICIT:
            mapping[code] = ISO3_EXPLICIT[code]
        elif fold(row["country_or_region"]) in by_name:
            mapping[code] = by_name[fold(row["country_or_region"])]
        else:
            raise ValueError(
                f"no ISO alpha-2 code for Ember country {code} ({row['country_or_region']}):"
                " add it to ISO3_EXPLICIT"
            )
    for code, iso2 in ISO3_EXPLICIT.items():
        mapping.setdefault(code, iso2)
    seen: dict[str, str] = {}
    for code, iso2 in sorted(mapping.items()):
        if iso2 in seen:
            raise ValueError(f"{code} and {seen[iso2]} both map to {iso2}")
        seen[iso2] = code
    return mapping


def load_ember(
    data_dir: Path, em: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Ember records (countries that Electricity Maps lacks, and world regions) and the
    ISO alpha-3 -> alpha-2 mapping."""
    ember = json.loads((data_dir / EMBER_FILE).read_text("utf-8"))
    iso3 = iso3_to_iso2(ember, em)
    em_countries = {k.split("-")[0] for k in em}
    zones: dict[str, dict[str, Any]] = {}
    for code, row in sorted(ember.items()):
        record: dict[str, Any] = {
            "name": row["country_or_region"],
            "g_per_kwh": float(row["emissions_intensity_gco2_per_kwh"]),
            "year": int(row["year"]),
            "source": "ember",
        }
        if not row.get("country_code"):
            zones["EMBER:" + re.sub(r"\s+", "-", code.strip())] = record
            continue
        iso2 = iso3[code]
        if iso2 in em_countries:
            continue  # Electricity Maps covers it (also RU and CL, which lack a national key)
        zones[iso2] = record | {"country": iso2, "iso3": code}
    return zones, iso3


def load_egrid(data_dir: Path) -> dict[str, dict[str, Any]]:
    path = data_dir / EGRID_FILE
    zones: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        if not row or not row[0].strip():
            continue
        sub, lb_per_mwh = row[0].strip(), float(row[1])
        year = int(row[2])
        zones[f"US-EGRID-{sub}"] = {
            "name": f"{EGRID_NAMES.get(sub, sub)} (eGRID {sub})",
            "g_per_kwh": round(lb_per_mwh * LB_PER_MWH_TO_G_PER_KWH, 2),
            "year": year,
            "source": "egrid",
            "country": "US",
            "note": f"CO2 only (not CO2e), generation-based; {lb_per_mwh} lb/MWh",
        }
    return zones


def load_gcp(data_dir: Path, em: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    path = data_dir / GCP_FILE
    found = re.search(r"\d{4}", path.name)  # the CSV has no year column; the file name does
    if found is None:
        raise ValueError(f"no year in the file name {path.name}")
    year = int(found[0])
    zones: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            region = row["Google Cloud Region"].strip()
            grid_zone = GCP_GRID_ZONES.get(region)
            if grid_zone is None:
                raise ValueError(f"Google Cloud region {region} has no entry in GCP_GRID_ZONES")
            if grid_zone not in em:
                raise ValueError(f"GCP_GRID_ZONES[{region!r}] = {grid_zone!r} is not a zone")
            zones[f"gcp:{region}"] = {
                "name": f"Google Cloud {region} ({row['Location'].strip()})",
                "g_per_kwh": float(row["Grid carbon intensity (gCO2eq / kWh)"]),
                "year": year,
                "source": "gcp",
                "cfe_share": float(row["Google CFE"]),
                "grid_zone": grid_zone,
                "country": em[grid_zone]["country"],
            }
    return zones


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(data_dir: Path) -> tuple[dict[str, Any], str]:
    """The table (a JSON-ready dict) and the attribution text."""
    em = load_electricitymaps(data_dir)
    ember, iso3 = load_ember(data_dir, em)
    egrid = load_egrid(data_dir)
    gcp = load_gcp(data_dir, em)
    for code, iso2 in iso3.items():
        if iso2 in em:
            em[iso2]["iso3"] = code
    zones: dict[str, dict[str, Any]] = {}
    for part in (em, ember, egrid, gcp):
        overlap = zones.keys() & part.keys()
        if overlap:
            raise ValueError(f"zone keys defined twice: {sorted(overlap)}")
        zones.update(part)
    zones = {k: {f: v for f, v in rec.items() if v is not None} for k, rec in zones.items()}

    counts = {s: sum(r["source"] == s for r in zones.values()) for s in SOURCES}
    years = {s: sorted({r["year"] for r in zones.values() if r["source"] == s}) for s in SOURCES}
    inputs = [*EM_FILES.values(), EMBER_FILE, EGRID_FILE, GCP_FILE]
    meta = {
        "format": FORMAT_VERSION,
        "licence": "ODbL-1.0 (a derived database of Electricity Maps data); see ATTRIBUTION.md",
        "sources": {s: SOURCES[s] | {"zones": counts[s], "years": years[s]} for s in SOURCES},
        "inputs": {name: _sha256(data_dir / name) for name in sorted(inputs)},
        "generator": "scripts/build_carbon_table.py",
    }
    table = {"meta": meta, "iso3": dict(sorted(iso3.items())), "zones": zones}
    return table, attribution(counts, years)


def dumps(table: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys and one zone per line: deterministic and diff-friendly."""

    def compact(obj: Any) -> str:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    parts = []
    for key in sorted(table):
        if key == "zones":
            lines = [f"{compact(k)}:{compact(v)}" for k, v in sorted(table[key].items())]
            parts.append('"zones":{\n' + ",\n".join(lines) + "\n}")
        else:
            parts.append(f"{compact(key)}:{compact(table[key])}")
    return "{" + ",\n".join(parts) + "}\n"


def attribution(counts: Mapping[str, int], years: Mapping[str, Sequence[int]]) -> str:
    def yrs(s: str) -> str:
        y = years[s]
        return str(y[0]) if len(y) == 1 else f"{y[0]}-{y[-1]}"

    described = {
        "electricitymaps": "Electricity Maps yearly averages per zone (lifecycle, consumption-based"
        " gCO2eq/kWh; renewable and carbon-free shares), via CO2.js",
        "ember": "Ember yearly average intensity of generation per country and world region"
        " (gCO2/kWh), via CO2.js; only countries Electricity Maps lacks, plus `EMBER:` regions",
        "egrid": "US EPA eGRID CO2 total output emission rate per subregion,"
        " lb/MWh x 0.45359237 = g/kWh (CO2 only, not CO2e)",
        "gcp": "Google Cloud region carbon data: grid intensity (gCO2eq/kWh) and Google CFE"
        " share per region",
    }
    licences = {
        "electricitymaps": "ODbL 1.0",
        "ember": "CC BY-SA 4.0",
        "egrid": "US government work",
        "gcp": "Apache-2.0",
    }
    rows = "\n".join(
        f"| `{s}` | {described[s]} | {counts[s]} | {yrs(s)} | {licences[s]} |" for s in described
    )
    return f"""\
# Attribution and licences of the embedded carbon-intensity table

`intensity.json` is generated by `scripts/build_carbon_table.py` of the `meter` project
from the public files listed below. The Electricity Maps and Ember figures are those
republished by the CO2.js project of The Green Web Foundation
(https://github.com/thegreenwebfoundation/co2.js). Each record's `source` field says which
file it comes from. Electricity Maps zones carry their 2025 yearly average, or the 2024 one
where 2025 is missing.

| source id | data | zones | years | licence |
|---|---|---|---|---|
{rows}

## Electricity Maps: ODbL 1.0

Contains data from Electricity Maps (https://www.electricitymaps.com/), made available under
the Open Database License 1.0 (https://opendatacommons.org/licenses/odbl/1-0/). The table in
this folder is a derived database of that data and is itself made available under ODbL 1.0:
you may share and adapt it if you credit Electricity Maps and keep any derived database
under ODbL.

## Ember: CC BY-SA 4.0

Contains data from Ember (https://ember-energy.org/), licensed under Creative Commons
Attribution-ShareAlike 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Records with
`"source": "ember"` are adapted from it (keys changed, values unchanged) and are shared
under the same licence.

## Google Cloud: Apache-2.0

Contains Google Cloud region carbon data
(https://github.com/GoogleCloudPlatform/region-carbon-info), Copyright Google LLC, licensed
under the Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0). Records with
`"source": "gcp"` carry Google's figures unchanged; `grid_zone` is added by this project.

## US EPA eGRID: US government work

Contains data from the US Environmental Protection Agency's Emissions & Generation Resource
Integrated Database (eGRID, https://www.epa.gov/egrid), a work of the US government, not
subject to copyright in the United States. Values converted from lb/MWh to g/kWh.
"""


def write(data_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    table, attribution_md = build(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "intensity.json", out_dir / "ATTRIBUTION.md"
    json_path.write_bytes(dumps(table).encode("utf-8"))
    md_path.write_bytes(attribution_md.encode("utf-8"))
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data_dir", nargs="?", type=Path, default=DEFAULT_DATA_DIR,
        help=f"folder with the raw source files (default: {DEFAULT_DATA_DIR})",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT_DIR,
        help=f"output folder (default: {DEFAULT_OUT_DIR})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"build_carbon_table: no data folder at {args.data_dir}", file=sys.stderr)
        return 2
    json_path, md_path = write(args.data_dir, args.out)
    table = json.loads(json_path.read_text("utf-8"))
    size = json_path.stat().st_size
    print(f"wrote {json_path} ({len(table['zones'])} zones, {size} bytes) and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

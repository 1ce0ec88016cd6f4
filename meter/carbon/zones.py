"""Which grid zone the machine draws from: zone names, cloud regions, and the resolution order.

Order (first that gives a zone wins):

1. the explicit ``zone`` argument;
2. ``METER_ZONE``;
3. the cloud region, read from ``CLOUD_ENV_VARS`` and mapped through `CLOUD_REGIONS`
   (a region with no mapping adds a warning and resolution goes on);
4. the configured ``default``;
5. the world average (`WORLD_KEY`), with a warning saying how to set the zone.

A zone is a table key (``DE``, ``US-CAL-CISO``, ``US-EGRID-CAMX``, ``EMBER:EU``), an ISO 3166
alpha-2 or alpha-3 country code (``FR``, ``FRA``), or a cloud region (``aws:us-east-1``,
``gcp:europe-west4``, ``azure:westeurope``), all case-insensitive. Nothing here opens a socket:
no IP geolocation, no cloud metadata server.

>>> resolve_zone("deu").key
'DE'
>>> resolve_zone(environ={"AWS_REGION": "eu-west-3"}).how
'cloud:AWS_REGION'
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from meter import config
from meter.carbon.table import WORLD_KEY, Table, ZoneRecord, fold, load_table
from meter.errors import ConfigError

__all__ = [
    "CLOUD_ENV_VARS",
    "CLOUD_REGIONS",
    "COUNTRY_ALIASES",
    "SPLIT_COUNTRY_ZONES",
    "ResolvedZone",
    "ZoneMatch",
    "close_zones",
    "normalise_zone",
    "resolve_zone",
    "search_zones",
]

#: Environment variables that name the cloud region, in the order they are read.
#: AWS: ``AWS_REGION`` (set by Lambda, ECS, the SDKs' convention), ``AWS_DEFAULT_REGION``
#: (the CLI's). GCP: ``GOOGLE_CLOUD_REGION`` (Cloud Run jobs and common convention),
#: ``CLOUDSDK_COMPUTE_REGION`` (gcloud), ``FUNCTION_REGION`` (Cloud Functions, older
#: runtimes). Azure: ``AZURE_REGION`` (convention), ``REGION_NAME`` (App Service, e.g.
#: ``West Europe``), ``AZURE_LOCATION`` (convention, e.g. azd). Nothing asks a metadata server.
CLOUD_ENV_VARS: tuple[tuple[str, str], ...] = (
    ("AWS_REGION", "aws"),
    ("AWS_DEFAULT_REGION", "aws"),
    ("GOOGLE_CLOUD_REGION", "gcp"),
    ("CLOUDSDK_COMPUTE_REGION", "gcp"),
    ("FUNCTION_REGION", "gcp"),
    ("AZURE_REGION", "azure"),
    ("REGION_NAME", "azure"),
    ("AZURE_LOCATION", "azure"),
)

# Each cloud region -> the table key of the grid it draws from: an Electricity Maps zone (the
# balancing area or bidding zone serving the data centre's city), or for Google Cloud the
# ``gcp:<region>`` record, which carries Google's own figure and CFE share, and its
# Electricity Maps zone as ``grid_zone`` (mapped in scripts/build_carbon_table.py).
#: Cloud region aliases (``aws:<region>``, ``gcp:<region>``, ``azure:<region>``) -> table key.
CLOUD_REGIONS: dict[str, str] = {
    # -- AWS (https://docs.aws.amazon.com/global-infrastructure/latest/regions/) --
    "aws:us-east-1": "US-MIDA-PJM",  # N. Virginia (Ashburn), Dominion zone of PJM
    "aws:us-east-2": "US-MIDA-PJM",  # Ohio (Columbus area), AEP Ohio in PJM
    "aws:us-west-1": "US-CAL-CISO",  # N. California (San Francisco Bay Area), CAISO
    "aws:us-west-2": "US-NW-BPAT",  # Oregon (Boardman/Umatilla), Bonneville Power area
    "aws:ca-central-1": "CA-QC",  # Montréal, Hydro-Québec
    "aws:ca-west-1": "CA-AB",  # Calgary, Alberta grid (AESO)
    "aws:mx-central-1": "MX",  # Querétaro, Mexico (one zone for Mexico)
    "aws:sa-east-1": "BR-CS",  # São Paulo, South-East/Centre-West subsystem
    "aws:eu-west-1": "IE",  # Dublin, Ireland
    "aws:eu-west-2": "GB",  # London, Great Britain
    "aws:eu-west-3": "FR",  # Paris, France
    "aws:eu-central-1": "DE",  # Frankfurt, Germany
    "aws:eu-central-2": "CH",  # Zürich, Switzerland
    "aws:eu-north-1": "SE-SE3",  # Stockholm, bidding zone SE3
    "aws:eu-south-1": "IT-NO",  # Milan, North Italy bidding zone
    "aws:eu-south-2": "ES",  # Aragón, Spain (mainland)
    "aws:il-central-1": "IL",  # Tel Aviv, Israel
    "aws:me-south-1": "BH",  # Bahrain
    "aws:me-central-1": "AE",  # United Arab Emirates
    "aws:af-south-1": "ZA",  # Cape Town, South Africa (one national grid, Eskom)
    "aws:ap-east-1": "HK",  # Hong Kong
    "aws:ap-south-1": "IN-WE",  # Mumbai, Western regional grid
    "aws:ap-south-2": "IN-SO",  # Hyderabad, Southern regional grid
    "aws:ap-northeast-1": "JP-TK",  # Tokyo, TEPCO area
    "aws:ap-northeast-2": "KR",  # Seoul, South Korea
    "aws:ap-northeast-3": "JP-KN",  # Osaka, Kansai area
    "aws:ap-southeast-1": "SG",  # Singapore
    "aws:ap-southeast-2": "AU-NSW",  # Sydney, New South Wales (NEM region)
    "aws:ap-southeast-3": "ID",  # Jakarta, Indonesia
    "aws:ap-southeast-4": "AU-VIC",  # Melbourne, Victoria (NEM region)
    "aws:ap-southeast-5": "MY-WM",  # Malaysia (Johor/Kuala Lumpur), Peninsular grid
    "aws:ap-southeast-7": "TH",  # Bangkok, Thailand
    # -- Google Cloud: every region in Google's region carbon data; the record keeps Google's
    # figure and CFE share, its grid_zone the Electricity Maps zone. --
    "gcp:africa-south1": "gcp:africa-south1",  # Johannesburg (ZA)
    "gcp:asia-east1": "gcp:asia-east1",  # Changhua County, Taiwan (TW)
    "gcp:asia-east2": "gcp:asia-east2",  # Hong Kong (HK)
    "gcp:asia-northeast1": "gcp:asia-northeast1",  # Tokyo (JP-TK)
    "gcp:asia-northeast2": "gcp:asia-northeast2",  # Osaka (JP-KN)
    "gcp:asia-northeast3": "gcp:asia-northeast3",  # Seoul (KR)
    "gcp:asia-south1": "gcp:asia-south1",  # Mumbai (IN-WE)
    "gcp:asia-south2": "gcp:asia-south2",  # Delhi (IN-NO)
    "gcp:asia-southeast1": "gcp:asia-southeast1",  # Singapore (SG)
    "gcp:asia-southeast2": "gcp:asia-southeast2",  # Jakarta (ID)
    "gcp:australia-southeast1": "gcp:australia-southeast1",  # Sydney (AU-NSW)
    "gcp:australia-southeast2": "gcp:australia-southeast2",  # Melbourne (AU-VIC)
    "gcp:europe-central2": "gcp:europe-central2",  # Warsaw (PL)
    "gcp:europe-north1": "gcp:europe-north1",  # Hamina, Finland (FI)
    "gcp:europe-north2": "gcp:europe-north2",  # Stockholm (SE-SE3)
    "gcp:europe-southwest1": "gcp:europe-southwest1",  # Madrid (ES)
    "gcp:europe-west1": "gcp:europe-west1",  # St. Ghislain, Belgium (BE)
    "gcp:europe-west2": "gcp:europe-west2",  # London (GB)
    "gcp:europe-west3": "gcp:europe-west3",  # Frankfurt (DE)
    "gcp:europe-west4": "gcp:europe-west4",  # Eemshaven, Netherlands (NL)
    "gcp:europe-west6": "gcp:europe-west6",  # Zürich (CH)
    "gcp:europe-west8": "gcp:europe-west8",  # Milan (IT-NO)
    "gcp:europe-west9": "gcp:europe-west9",  # Paris (FR)
    "gcp:europe-west10": "gcp:europe-west10",  # Berlin (DE)
    "gcp:europe-west12": "gcp:europe-west12",  # Turin (IT-NO)
    "gcp:me-central1": "gcp:me-central1",  # Doha (QA)
    "gcp:me-central2": "gcp:me-central2",  # Dammam, Saudi Arabia (SA)
    "gcp:me-west1": "gcp:me-west1",  # Tel Aviv (IL)
    "gcp:northamerica-northeast1": "gcp:northamerica-northeast1",  # Montréal (CA-QC)
    "gcp:northamerica-northeast2": "gcp:northamerica-northeast2",  # Toronto (CA-ON)
    "gcp:northamerica-south1": "gcp:northamerica-south1",  # Querétaro, Mexico (MX)
    "gcp:southamerica-east1": "gcp:southamerica-east1",  # São Paulo (BR-CS)
    "gcp:southamerica-west1": "gcp:southamerica-west1",  # Santiago (CL-SEN)
    "gcp:us-central1": "gcp:us-central1",  # Council Bluffs, Iowa (US-MIDW-MISO)
    "gcp:us-central2": "gcp:us-central2",  # Pryor, Oklahoma (US-CENT-SWPP)
    "gcp:us-east1": "gcp:us-east1",  # Moncks Corner, South Carolina (US-CAR-SC)
    "gcp:us-east2": "gcp:us-east2",  # Georgia (US-SE-SOCO)
    "gcp:us-east4": "gcp:us-east4",  # Ashburn, N. Virginia (US-MIDA-PJM)
    "gcp:us-east5": "gcp:us-east5",  # Columbus, Ohio (US-MIDA-PJM)
    "gcp:us-south1": "gcp:us-south1",  # Dallas (US-TEX-ERCO)
    "gcp:us-west1": "gcp:us-west1",  # The Dalles, Oregon (US-NW-BPAT)
    "gcp:us-west2": "gcp:us-west2",  # Los Angeles (US-CAL-CISO)
    "gcp:us-west3": "gcp:us-west3",  # Salt Lake City (US-NW-PACE)
    "gcp:us-west4": "gcp:us-west4",  # Las Vegas (US-NW-NEVP)
    # -- Azure (https://learn.microsoft.com/azure/reliability/regions-list) --
    "azure:eastus": "US-MIDA-PJM",  # Virginia (Boydton), Dominion zone of PJM
    "azure:eastus2": "US-MIDA-PJM",  # Virginia (Boydton), Dominion zone of PJM
    "azure:centralus": "US-MIDW-MISO",  # Iowa (Des Moines), MidAmerican Energy in MISO
    "azure:northcentralus": "US-MIDA-PJM",  # Illinois (Chicago), ComEd zone of PJM
    "azure:southcentralus": "US-TEX-ERCO",  # Texas (San Antonio), ERCOT
    "azure:westcentralus": "US-NW-WACM",  # Wyoming (Cheyenne), WAPA Rocky Mountain area
    "azure:westus": "US-CAL-CISO",  # California (San Francisco Bay Area), CAISO
    "azure:westus2": "US-NW-GCPD",  # Washington (Quincy), Grant County PUD area
    "azure:westus3": "US-SW-AZPS",  # Arizona (Phoenix metro), Arizona Public Service area
    "azure:canadacentral": "CA-ON",  # Toronto, Ontario IESO
    "azure:canadaeast": "CA-QC",  # Québec City, Hydro-Québec
    "azure:mexicocentral": "MX",  # Querétaro, Mexico
    "azure:brazilsouth": "BR-CS",  # São Paulo state, South-East/Centre-West subsystem
    "azure:northeurope": "IE",  # Dublin, Ireland
    "azure:westeurope": "NL",  # Netherlands (Amsterdam area)
    "azure:uksouth": "GB",  # London, Great Britain
    "azure:ukwest": "GB",  # Cardiff, Great Britain
    "azure:francecentral": "FR",  # Paris, France
    "azure:germanywestcentral": "DE",  # Frankfurt, Germany
    "azure:switzerlandnorth": "CH",  # Zürich, Switzerland
    "azure:norwayeast": "NO-NO1",  # Oslo, bidding zone NO1
    "azure:swedencentral": "SE-SE3",  # Gävle/Sandviken, bidding zone SE3
    "azure:polandcentral": "PL",  # Warsaw, Poland
    "azure:italynorth": "IT-NO",  # Milan, North Italy bidding zone
    "azure:spaincentral": "ES",  # Madrid, Spain (mainland)
    "azure:israelcentral": "IL",  # Israel
    "azure:uaenorth": "AE",  # Dubai, United Arab Emirates
    "azure:qatarcentral": "QA",  # Doha, Qatar
    "azure:southafricanorth": "ZA",  # Johannesburg, South Africa
    "azure:centralindia": "IN-WE",  # Pune, Western regional grid
    "azure:southindia": "IN-SO",  # Chennai, Southern regional grid
    "azure:eastasia": "HK",  # Hong Kong
    "azure:southeastasia": "SG",  # Singapore
    "azure:japaneast": "JP-TK",  # Tokyo/Saitama, TEPCO area
    "azure:japanwest": "JP-KN",  # Osaka, Kansai area
    "azure:koreacentral": "KR",  # Seoul, South Korea
    "azure:australiaeast": "AU-NSW",  # Sydney, New South Wales (NEM region)
    "azure:australiasoutheast": "AU-VIC",  # Melbourne, Victoria (NEM region)
}

#: Common country names that are not ISO codes -> zone. ``UK``: the United Kingdom's ISO code
#: is GB; zone ``GB`` is Great Britain (Northern Ireland, ``GB-NIR``, is a separate grid).
COUNTRY_ALIASES: dict[str, str] = {"UK": "GB"}

#: Countries that Electricity Maps splits into zones with no national one, and the zone a
#: country code stands for. Chile: ``CL-SEN`` is the national grid (Sistema Eléctrico
#: Nacional, nearly all of Chile's load). Russia (``RU-1``, ``RU-2``, ``RU-AS``) is not here:
#: its grids differ and none stands for the country, so ``RU`` fails listing them.
SPLIT_COUNTRY_ZONES: dict[str, str] = {"CL": "CL-SEN"}

_CLOUDS = ("aws", "gcp", "azure")
_AWS_AZ = re.compile(r"([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]")  # us-east-1a -> us-east-1
_GCP_ZONE = re.compile(r"([a-z]+-[a-z]+\d+)-[a-z]")  # europe-west4-a -> europe-west4
_MAX_SUGGESTIONS = 5
_HOW_TO_LIST = "run `meter zones QUERY` to search the zones"
_ZONE_FORMS = (
    "A zone is a table key (DE, US-CAL-CISO), an ISO country code (FR, FRA) or a cloud region "
    f"(aws:us-east-1, gcp:europe-west4, azure:westeurope); {_HOW_TO_LIST}"
)


@dataclass(frozen=True)
class ResolvedZone:
    """The zone a run is priced in, and how it was found.

    ``how``: ``argument``, ``METER_ZONE``, ``cloud:<ENV_VAR>``, ``default`` or ``world``.
    ``requested``: the text that named it (the cloud alias for ``cloud:``, None for
    ``world``). ``warning``: text to show the user (unmapped cloud region, world average), or
    None; `resolve_zone` does not emit it, the caller records or prints it.
    """

    key: str
    record: ZoneRecord
    how: str
    requested: str | None
    warning: str | None


def _cloud_alias(cloud: str, region: str) -> str:
    """``aws:us-east-1`` from any spelling: ``AWS``, ``us-east-1a`` (an availability zone),
    ``europe-west4-a`` (a GCP zone), ``West Europe`` (Azure display name)."""
    region = region.strip().lower()
    if cloud == "azure":
        return f"azure:{re.sub(r'[^a-z0-9]', '', region)}"
    zone_suffix = {"aws": _AWS_AZ, "gcp": _GCP_ZONE}.get(cloud)
    m = zone_suffix.fullmatch(region) if zone_suffix else None
    return f"{cloud}:{m[1] if m else region}"


def _describe(key: str, table: Table) -> str:
    record = table.get(key)
    if record is not None:
        return f"{key} ({record.name})"
    target = CLOUD_REGIONS.get(key)
    return f"{key} (-> {target})" if target else key


def _suggest(text: str, table: Table, candidates: Mapping[str, str] | None = None) -> list[str]:
    """Up to five close matches for ``text`` among ``candidates`` (folded key or name ->
    key; by default every key, name and cloud region, with and without its prefix): exact
    matches first, then prefix and substring matches, then difflib's close matches."""
    if candidates is None:
        pool: dict[str, str] = {}
        for record in table:
            pool.setdefault(fold(record.name), record.key)
        for alias in CLOUD_REGIONS:
            pool.setdefault(fold(alias.partition(":")[2]), alias)
            pool.setdefault(fold(alias), alias)
        for record in table:
            pool[fold(record.key)] = record.key
        candidates = pool
    query = fold(text)
    ranked: list[str] = [candidates[query]] if query in candidates else []
    if len(query) >= 3:
        starts = [c for c in candidates if c.startswith(query)]
        contains = [c for c in candidates if query in c and not c.startswith(query)]
        ranked += [candidates[c] for c in sorted(starts) + sorted(contains)]
    close = difflib.get_close_matches(query, candidates, n=2 * _MAX_SUGGESTIONS, cutoff=0.6)
    ranked += [candidates[c] for c in close]
    found = list(dict.fromkeys(ranked))  # unique, in rank order
    return [_describe(k, table) for k in found[:_MAX_SUGGESTIONS]]


def _unknown(
    text: str,
    table: Table,
    what: str = "zone",
    candidates: Mapping[str, str] | None = None,
    hint: str = _ZONE_FORMS,
) -> ConfigError:
    suggestions = _suggest(text, table, candidates)
    close = f"; did you mean {', '.join(suggestions)}?" if suggestions else "."
    return ConfigError(f"unknown {what} {text!r}{close} {hint}", setting="zone")


def normalise_zone(text: str, table: Table | None = None) -> str:
    """The table key that ``text`` names, or `ConfigError` (``setting="zone"``) with close
    matches.

    Accepts, case-insensitively: table keys (``DE``, ``us-cal-ciso``, ``US-EGRID-CAMX``,
    ``EMBER:World``), ISO 3166 alpha-2 and alpha-3 codes (``GB``, ``GBR``, ``UK``), and cloud
    regions (``aws:us-east-1``, ``gcp:europe-west4``, ``azure:westeurope``; see
    `CLOUD_REGIONS`). A country split into zones with no national one resolves through
    `SPLIT_COUNTRY_ZONES`, or fails listing its zones.

    >>> normalise_zone("deu"), normalise_zone("aws:eu-west-3"), normalise_zone("us-cal-ciso")
    ('DE', 'FR', 'US-CAL-CISO')
    """
    table = load_table() if table is None else table
    stripped = text.strip()
    if not stripped:
        raise ConfigError(
            "the zone is empty: give a zone such as DE, US-CAL-CISO or aws:us-east-1 "
            f"({_HOW_TO_LIST})",
            setting="zone",
        )

    prefix, colon, region = stripped.partition(":")
    if colon and prefix.strip().lower() in _CLOUDS:
        cloud = prefix.strip().lower()
        alias = _cloud_alias(cloud, region)
        if alias in CLOUD_REGIONS:
            return CLOUD_REGIONS[alias]
        if alias in table:
            return alias
        same_cloud = {fold(a): a for a in CLOUD_REGIONS if a.startswith(f"{cloud}:")}
        same_cloud |= {fold(a.partition(":")[2]): a for a in same_cloud.values()}
        raise _unknown(
            stripped,
            table,
            what=f"{cloud} region",
            candidates=same_cloud,
            hint=f"`meter zones {cloud}:` lists the {cloud} regions meter maps; for another "
            "region, give the zone of its grid instead (e.g. DE, US-CAL-CISO).",
        )

    key = table.match_key(stripped) or table.match_key(re.sub(r"\s+", "-", stripped))
    if key is not None:
        return key

    code = stripped.upper()
    if code in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[code]
    if len(code) == 3 and code in table.iso3:
        code = table.iso3[code]
        if code in table:
            return code
    if len(code) == 2 and code.isalpha():
        if code in SPLIT_COUNTRY_ZONES:
            return SPLIT_COUNTRY_ZONES[code]
        parts = [r for r in table if r.source == "electricitymaps" and r.country == code]
        if parts:
            listed = ", ".join(f"{r.key} ({r.name})" for r in parts)
            raise ConfigError(
                f"zone {text.strip()!r} is a country that Electricity Maps splits into grid "
                f"zones with no national average: {listed}. Pick the zone the machine is in, "
                f"e.g. METER_ZONE={parts[0].key}",
                setting="zone",
            )
    raise _unknown(stripped, table)


# -- search (``meter zones QUERY``) -------------------------------------------------------------

#: How a `search_zones` result matched, best first (``all``: there was no query).
Match = Literal["exact", "sub-zone", "cloud region", "word", "substring", "all"]


@dataclass(frozen=True)
class ZoneMatch:
    """One result of `search_zones`.

    ``key``: what to give as the zone: a table key, or a cloud region (``aws:eu-central-1``).
    ``zone``: the table key it is priced in (``key`` itself, but for an AWS or Azure region).
    ``match``: why it is listed: ``exact`` (the query is its key, ISO code, alias, cloud region
    or whole name), ``sub-zone`` or ``cloud region`` (inside an exact match), ``word`` (a word
    of its key or name, or of its zone's or country's, starts with the query), ``substring``,
    or ``all``.
    """

    key: str
    zone: str
    match: Match

    @property
    def cloud(self) -> bool:
        """Whether ``key`` is a cloud region (`CLOUD_REGIONS`)."""
        return self.key in CLOUD_REGIONS


def search_zones(query: str | None, table: Table | None = None) -> list[ZoneMatch]:
    """The zones and cloud regions ``query`` may mean, what the person most likely meant first.

    Ranks, ignoring case and accents: (1) exact matches: a table key, an ISO 3166 code or
    `COUNTRY_ALIASES` entry, a cloud region (with or without its ``aws:``/``gcp:``/``azure:``
    prefix), a zone's whole name; (2) the sub-zones of those (the zones of the country, the
    keys under the key) and the cloud regions in them; (3) zones and cloud regions a word of
    whose key or name starts with the query, a cloud region also by its zone's name and its
    country's (``germany`` finds ``aws:eu-central-1``); (4) the other substring matches. Within
    a rank: zones in key order, then cloud regions (AWS, GCP, Azure, as in `CLOUD_REGIONS`).
    No query (None or blank) lists every zone of the table, in key order. No match: ``[]``
    (`close_zones` has suggestions).

    >>> [(m.key, m.match) for m in search_zones("germany")][:3]
    [('DE', 'exact'), ('aws:eu-central-1', 'cloud region'), ('gcp:europe-west3', 'cloud region')]
    """
    table = load_table() if table is None else table
    if query is None or not query.strip():
        return [ZoneMatch(r.key, r.key, "all") for r in table]
    found: dict[str, ZoneMatch] = {}

    def add(key: str, match: Match) -> None:
        if key not in found:
            found[key] = ZoneMatch(key, CLOUD_REGIONS.get(key, key), match)

    exact, countries = _exact_matches(query, table)
    for key in exact:
        add(key, "exact")
    # The zones inside: every zone of a country named, and the keys under a key (AU-TAS-FI).
    scope = {k for k in exact if k not in CLOUD_REGIONS}
    for record in table:
        if record.key in CLOUD_REGIONS:
            continue
        if record.country in countries or any(record.key.startswith(f"{k}-") for k in scope):
            add(record.key, "sub-zone")
    scope |= {k for k, m in found.items() if m.match == "sub-zone"}
    for alias, target in CLOUD_REGIONS.items():
        zone = table.get(target)  # a GCP region's own record, else the zone it maps to
        if zone is not None and ((zone.grid_zone or target) in scope or zone.country in countries):
            add(alias, "cloud region")
    # Then words and substrings of keys and names: zones in key order, then cloud regions.
    q = fold(query)
    candidates = [r.key for r in table if r.key not in CLOUD_REGIONS] + list(CLOUD_REGIONS)
    texts = {key: _search_texts(key, table) for key in candidates if key not in found}
    tiers: tuple[tuple[Match, Callable[[str, str], bool]], ...] = (
        ("word", _word_start),
        ("substring", str.__contains__),
    )
    for match, test in tiers:
        for key, words in texts.items():
            if any(test(t, q) for t in words):
                add(key, match)
    return list(found.values())


def close_zones(text: str, table: Table | None = None) -> list[str]:
    """Up to five zones or cloud regions spelled like ``text``, as ``KEY (Name)``, for a search
    or a zone that matched nothing (difflib's close matches over keys, names and regions).

    >>> close_zones("germny")[0]
    'DE (Germany)'
    """
    return _suggest(text, load_table() if table is None else table)


def _exact_matches(text: str, table: Table) -> tuple[list[str], set[str]]:
    """The keys and cloud regions ``text`` names exactly, and the ISO countries it names."""
    stripped = text.strip()
    q = fold(stripped)
    keys: list[str] = []
    key = table.match_key(stripped) or table.match_key(re.sub(r"\s+", "-", stripped))
    if key is not None:
        keys.append(key)
    code = stripped.upper()
    if code in COUNTRY_ALIASES:
        keys.append(COUNTRY_ALIASES[code])
    code = table.iso3.get(code, code) if len(code) == 3 else code
    countries: set[str] = set()
    if len(code) == 2 and code.isalpha() and any(r.country == code for r in table):
        countries.add(code)
        if code in table or code in SPLIT_COUNTRY_ZONES:
            keys.append(SPLIT_COUNTRY_ZONES.get(code, code))
    prefix, colon, region = stripped.partition(":")
    cloud = prefix.strip().lower()
    if colon and cloud in _CLOUDS:
        alias = _cloud_alias(cloud, region)
        keys += [alias] if alias in CLOUD_REGIONS else []
    else:  # a region without its cloud (eu-central-1), else spelled loosely ("West Europe")
        regions = {a: fold(a.partition(":")[2]) for a in CLOUD_REGIONS}
        same = [a for a, r in regions.items() if r == q]
        bare = re.sub(r"[^a-z0-9]", "", q)
        keys += same or [a for a, r in regions.items() if re.sub(r"[^a-z0-9]", "", r) == bare]
    keys += [r.key for r in table if fold(r.name) == q]
    keys = list(dict.fromkeys(keys))
    for k in keys:  # a national zone named by its key or name names its country too
        record = table.get(k)
        country = None if record is None else record.country
        if country is not None and k in (country, SPLIT_COUNTRY_ZONES.get(country)):
            countries.add(country)
    return keys, countries


def _search_texts(key: str, table: Table) -> list[str]:
    """What a search matches ``key`` by, folded: its key and name; for a cloud region also the
    key and name of the zone it maps to or of its grid zone, and its country's name."""
    record = table.get(CLOUD_REGIONS.get(key, key))  # a GCP region's own record, else its zone
    texts = [key]
    if record is not None:
        texts += [record.key, record.name]
    if record is not None and key in CLOUD_REGIONS:
        grid = table.get(record.grid_zone) if record.grid_zone else None
        texts += [grid.key, grid.name] if grid is not None else []
        country = record.country
        national = table.get(SPLIT_COUNTRY_ZONES.get(country, country)) if country else None
        texts += [national.name] if national is not None else []
    return [fold(t) for t in dict.fromkeys(texts)]


def _word_start(text: str, query: str) -> bool:
    """Whether ``query`` occurs in ``text`` at the start of a word (after a non-alphanumeric)."""
    start = text.find(query)
    while start != -1:
        if start == 0 or not text[start - 1].isalnum():
            return True
        start = text.find(query, start + 1)
    return False


def resolve_zone(
    zone: str | None = None,
    *,
    default: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedZone:
    """The zone to price a run in: ``zone`` > ``METER_ZONE`` > cloud region > ``default`` >
    world average (see the module docstring). ``environ`` defaults to ``os.environ``.

    A bad ``zone``, ``METER_ZONE`` or ``default`` raises `ConfigError` at once; an unmapped
    cloud region only adds a warning. Offline: reads the environment and the embedded table.

    >>> r = resolve_zone(environ={"METER_ZONE": "fr", "AWS_REGION": "us-east-1"})
    >>> r.key, r.how, r.requested
    ('FR', 'METER_ZONE', 'fr')
    >>> resolve_zone(environ={}).how
    'world'
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    table = load_table()
    warnings: list[str] = []

    def found(key: str, how: str, requested: str | None) -> ResolvedZone:
        record = table.get(key)
        if record is None:  # only if CLOUD_REGIONS and the table disagree
            raise ConfigError(f"zone {key!r} is not in the embedded table", setting="zone")
        warning = "; ".join(warnings) or None
        return ResolvedZone(key, record, how, requested, warning)

    if zone is not None:
        return found(normalise_zone(zone, table), "argument", zone)

    meter_zone = config.raw("METER_ZONE", env) or ""
    if meter_zone:
        try:
            key = normalise_zone(meter_zone, table)
        except ConfigError as e:
            raise ConfigError(f"METER_ZONE: {e}", setting="METER_ZONE") from None
        return found(key, "METER_ZONE", meter_zone)

    for var, cloud in CLOUD_ENV_VARS:
        value = env.get(var, "").strip()
        if not value:
            continue
        alias = _cloud_alias(cloud, value)
        if alias in CLOUD_REGIONS:
            return found(CLOUD_REGIONS[alias], f"cloud:{var}", alias)
        warnings.append(
            f"{var}={value!r}: {alias} is not a cloud region meter maps to a grid zone; "
            f"set METER_ZONE to the zone of that region ({_HOW_TO_LIST})"
        )

    if default is not None and default.strip():
        try:
            key = normalise_zone(default, table)
        except ConfigError as e:
            raise ConfigError(f"default zone: {e}", setting="zone") from None
        return found(key, "default", default)

    world = table.get(WORLD_KEY)
    figure = f" ({world.g_per_kwh:g} gCO2/kWh, Ember {world.year})" if world else ""
    warnings.append(
        f"no grid zone set: using the world average{figure}, which can be several times off "
        "the real grid. Set the zone, e.g. METER_ZONE=DE or METER_ZONE=US-CAL-CISO; "
        f"{_HOW_TO_LIST}"
    )
    return found(WORLD_KEY, "world", None)

"""The one declaration of the METER_* variables (meter.config)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from meter import config
from meter.core import options_from_env
from meter.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_table_is_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- settings:begin", 1)[1].split("-->", 1)[1]
    table = block.split("<!-- settings:end -->", 1)[0].strip()
    assert table == config.markdown_table(), "regenerate it with meter.config.markdown_table()"


def test_every_variable_the_code_reads_is_declared() -> None:
    names: set[str] = set()
    for folder in ("meter", "exporters", "integrations"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "config.py" and path.parent.name == "meter":
                continue  # the declaration itself (its examples show typos)
            names.update(re.findall(r"\bMETER_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    declared = {s.name for s in config.SETTINGS}
    assert names - declared == set(), "declare them in meter/config.py"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("METER_PUE", " 1.25 ", 1.25),
        ("METER_NO_CPU", "YES", True),
        ("METER_NO_CPU", "off", False),
        ("METER_UK_REGION_ID", "7", 7),
        ("METER_ZONE", " DE ", "DE"),
        ("METER_ZONE", "  ", None),
    ],
)
def test_values_are_parsed_by_their_kind(name: str, text: str, expected: object) -> None:
    assert config.value(name, {name: text}) == expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("METER_NO_CPU", "maybe", "neither true nor false"),
        ("METER_PUE", "high", "is not a number"),
        ("METER_PUE", "nan", "is not a number"),
        ("METER_UK_REGION_ID", "7.5", "not a whole number"),
    ],
)
def test_bad_values_name_the_variable(name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        config.value(name, {name: text})
    assert raised.value.setting == name and name in str(raised.value)


def test_a_long_value_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as raised:
        config.value("METER_PUE", {"METER_PUE": "x" * 10_000})
    assert len(str(raised.value)) < 200 and "(10000 characters)" in str(raised.value)


def test_typos_are_named_with_the_closest_variable(caplog: pytest.LogCaptureFixture) -> None:
    env = {"METER_ZOEN": "DE", "METER_PEU": "1.2", "METER_NOCPU": "1", "METER_XYZZY": "1"}
    assert dict(config.unknown(env)) == {
        "METER_NOCPU": "METER_NO_CPU",
        "METER_PEU": "METER_PUE",
        "METER_XYZZY": None,
        "METER_ZOEN": "METER_ZONE",
    }
    with caplog.at_level(logging.WARNING, logger="meter"):
        options_from_env(env)
    text = caplog.text
    assert "METER_ZOEN is not a meter setting" in text and "did you mean METER_ZONE" in text
    assert "METER_NOCPU" in text and "METER_NO_CPU?" in text


def test_a_strict_boolean_fails_the_meter_fast() -> None:
    with pytest.raises(ConfigError, match="METER_NO_CPU='maybe'"):
        options_from_env({"METER_NO_CPU": "maybe"})

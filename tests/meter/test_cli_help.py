"""``--help`` comes from argparse itself, complete and consistent, with the ``METER_*``
variables each command reads (issue 13, item 3)."""

from __future__ import annotations

import re

import pytest

from meter import __version__, config
from meter.cli import build_parser, environment_help
from tests.meter.test_cli import run_meter

COMMANDS = ["devices", "run", "serve", "zones", "calibrate", "dashboard"]


def help_of(command: str) -> str:
    parser = build_parser()
    return (parser.commands()[command] if command else parser).format_help()


def usage_and_rest(text: str) -> tuple[str, str]:
    usage, rest = text.split("\n\n", 1)
    return usage, rest


def test_version():
    proc = run_meter("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"meter {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_in_the_usage_line_with_the_same_metavar(command):
    parser = build_parser().commands()[command]
    usage, rest = usage_and_rest(parser.format_help())
    usage = " ".join(usage.split())  # unwrapped
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        first, last = action.option_strings[0], action.option_strings[-1]
        assert re.search(rf"\[{re.escape(first)}[ \]]", usage), first
        if action.nargs != 0:  # takes a value: the same metavar in the usage and the list
            metavar = action.metavar or action.dest.upper()
            if action.nargs == "?":  # an optional value (--otlp [URL])
                metavar = f"[{metavar}]"
            assert f"[{first} {metavar}]" in usage, first
            assert f"{last} {metavar}" in rest, last


def test_run_usage_is_generated_and_complete():
    usage, _ = usage_and_rest(help_of("run"))
    usage = " ".join(usage.split())
    assert usage.startswith("usage: meter run [-h]")
    assert usage.endswith("-- CMD [ARGS ...]")
    for flag in [
        "--pue P",
        "--name NAME",
        "--gpus 0,1",
        "--no-cpu",
        "--prometheus-addr ADDR",
        "--push-job NAME",
        "--push-interval S",
        "--push-basic-auth-file FILE",
        "--quiet",
    ]:
        short = {"--quiet": "-q"}.get(flag, flag)
        assert short in usage, flag


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_its_variables(command):
    parser = build_parser().commands()[command]
    assert parser.description and len(parser.description) > 60
    assert parser.epilog and parser.epilog.startswith("environment")
    text = parser.format_help()
    assert parser.description.split()[0] in text
    for name in re.findall(r"^  (METER_\w+)", parser.epilog, flags=re.MULTILINE):
        declared = config.setting(name)
        if declared.default:
            entry = parser.epilog.split(name, 1)[1].split("\n  METER_", 1)[0]
            assert "default:" in " ".join(entry.split()), name


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("run", ["METER_ZONE", "METER_PUE", "METER_QUIET", "METER_INTERVAL_S", "METER_GPUS"]),
        ("serve", ["METER_ZONE", "METER_INTERVAL_S", "METER_CARBON_PROVIDER"]),
        ("devices", ["METER_GPUS", "METER_SIMULATE_GPUS"]),
        ("calibrate", ["METER_IDLE_FILE", "METER_INTERVAL_S"]),
        ("zones", ["METER_ZONE"]),
    ],
)
def test_the_epilog_lists_the_variables_a_command_reads(command, names):
    epilog = build_parser().commands()[command].epilog or ""
    for name in names:
        assert f"  {name}" in epilog, name


def test_the_top_level_help_lists_every_variable():
    proc = run_meter("--help")
    assert proc.returncode == 0
    for s in config.SETTINGS:
        assert s.name in proc.stdout, s.name
    for command in COMMANDS:
        assert command in proc.stdout


def test_the_epilog_comes_from_the_declarations():
    text = environment_help(["METER_ZONE", "METER_PUE"], ["--zone"])
    zone, pue = config.setting("METER_ZONE"), config.setting("METER_PUE")
    flat = " ".join(text.split())
    assert "meter zones QUERY searches" in flat  # the help, without its Markdown
    assert f"default: {zone.default}; flag --zone" in flat
    assert f"(default: {pue.default})" in flat  # no --pue flag given: none named
    assert "`" not in text


def test_run_help_shows_defaults_and_variables_of_its_flags():
    flat = " ".join(help_of("run").split())
    assert "--interval S sampling interval, seconds (env METER_INTERVAL_S, default 0.1" in flat
    assert "--push-interval S seconds between pushes (default 15)" in flat
    assert "-q, --quiet no live status line on the terminal (env METER_QUIET" in flat

"""The distribution claims only `meter` in site-packages: exporters/ and integrations/ install
as meter.exporters and meter.integrations (pyproject's package-dir mapping)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_subpackages_import_under_meter_from_anywhere(tmp_path: Path) -> None:
    code = (
        "import meter.exporters.prometheus, meter.integrations.asgi\n"
        "import importlib.util as u\n"
        "print(u.find_spec('exporters') is None, u.find_spec('integrations') is None)\n"
        "print(meter.exporters.prometheus.__name__, meter.integrations.asgi.__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "True",
        "True",
        "meter.exporters.prometheus",
        "meter.integrations.asgi",
    ]


def test_no_code_imports_the_old_top_level_names() -> None:
    offenders = []
    for folder in ("meter", "exporters", "integrations", "tests", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(
                    ("from exporters", "import exporters")
                ) or stripped.startswith(("from integrations", "import integrations")):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {stripped}")
    assert not offenders, offenders

"""The helpers that run the real Prometheus binaries: a missing one skips with a reason that
names the Debian package to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exporters.promservers import need_binary


@pytest.mark.parametrize(
    ("binary", "package"),
    [
        ("promtool", "prometheus"),  # no Debian package is called promtool
        ("prometheus", "prometheus"),
        ("prometheus-pushgateway", "prometheus-pushgateway"),
    ],
)
def test_a_missing_binary_skips_naming_its_debian_package(
    binary: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: nothing is installed
    with pytest.raises(pytest.skip.Exception) as skipped:
        need_binary(binary)
    assert f"apt-get install {package};" in str(skipped.value)

"""The report in a real browser: headless Chromium loads the page offline, plotly draws every
chart, no JavaScript error is raised, and the screenshot is not blank.

CI installs Debian's ``chromium`` (``.ci/run``); without it these tests skip with the reason.
Errors are caught by the page itself (``#meter-js-errors``, filled by ``window.onerror``, unhandled
rejections and ``console.error``) and read back from ``--dump-dom``.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the HTML report needs plotly (pip install '.[report]')")

from meter.report import main
from tests.meter.report.synthetic import write_file

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run does)"
)
FLAGS = (
    "--headless=new",
    "--disable-gpu",
    "--no-sandbox",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-extensions",
    "--virtual-time-budget=5000",
)


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels (RGB or RGBA bytes) of an 8-bit truecolour PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), f"unsupported PNG: depth {depth} {colour}"
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # undo the row filter (PNG spec, section 9)
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        pixels += [bytes(line[i : i + 3]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-run report: the trend charts, then both runs in detail (10 charts)."""
    folder = tmp_path_factory.mktemp("report")
    write_file(folder / "runs.jsonl", runs=2)
    assert main([str(folder / "runs.jsonl"), "-o", str(folder / "report.html")]) == 0
    return folder / "report.html"


def test_the_charts_render_without_javascript_errors(report: Path) -> None:
    done = chromium("--window-size=1400,2400", "--dump-dom", report.as_uri(), cwd=report.parent)
    dom = done.stdout
    assert done.returncode == 0 and "<body" in dom, done.stderr[-2000:]
    errors = re.search(r'<pre id="meter-js-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None, "the error box is gone from the DOM"
    assert errors.group(1).strip() == "", f"JavaScript errors: {errors.group(1)}"
    charts = 2 + 2 * 4
    assert dom.count('class="plot-container plotly"') == charts
    # Each drawn chart has its SVG layers; bars and lines were drawn into them.
    assert dom.count('class="main-svg"') >= charts
    assert dom.count('class="cartesianlayer"') >= charts
    assert 'class="trace bars"' in dom and 'class="js-line"' in dom and 'class="js-fill"' in dom
    assert "epoch ×4" in dom  # the window label drawn on the timeline


def test_the_screenshot_is_not_blank(report: Path) -> None:
    shot = report.parent / "shot.png"
    done = chromium(
        "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri(), cwd=report.parent
    )
    assert shot.exists(), done.stderr[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    colours = set(pixels)
    non_white = sum(p != b"\xff\xff\xff" for p in pixels) / len(pixels)
    assert len(colours) > 50, f"{len(colours)} colours: a blank page?"
    assert non_white > 0.05, f"{non_white:.1%} of the page drawn"

"""Budget: ``import meter`` < 100 ms.

Wall time of a fresh ``python -c "import meter"`` minus a fresh ``python -c "pass"`` (the
interpreter's own start-up), paired run by run and alternated in order so drift cancels. Also
timed inside the process (``perf_counter`` around the import), and the top contributors by
``python -X importtime``.

With the bytecode cache, as an installed package is imported: the ``.pyc`` files go to a
private ``PYTHONPYCACHEPREFIX`` filled by two warm-up runs (nothing is written into the source
tree, and a ``PYTHONDONTWRITEBYTECODE`` in the environment cannot turn the cache off). The
budget is judged on this figure. Also with meter's own modules compiled from source at every
import (the same cache minus meter's files, read-only): what an editable install sees under
``PYTHONDONTWRITEBYTECODE=1``, and the first import after an install that compiled nothing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from common import summarize

BUDGET_MS = 100.0

_IN_PROCESS = "import time; t = time.perf_counter(); import meter; print(time.perf_counter() - t)"
_PACKAGE_DIR = "import os, meter; print(os.path.dirname(os.path.abspath(meter.__file__)))"
_NEW_MODULES = (
    "import sys; before = set(sys.modules); import meter; print(len(set(sys.modules) - before))"
)


def _env(cache_dir: str, write: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _wall_s(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0


def _output(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], check=True, capture_output=True, text=True, env=env
    )


def _paired(repeats: int, env_for_run: Callable[[], dict[str, str]]) -> dict[str, Any]:
    """``import meter`` and ``pass``, ``repeats`` pairs in alternating order."""
    meter_ms: list[float] = []
    base_ms: list[float] = []
    diff_ms: list[float] = []
    for i in range(repeats):
        if i % 2:
            b = _wall_s("pass", env_for_run())
            m = _wall_s("import meter", env_for_run())
        else:
            m = _wall_s("import meter", env_for_run())
            b = _wall_s("pass", env_for_run())
        meter_ms.append(m * 1e3)
        base_ms.append(b * 1e3)
        diff_ms.append((m - b) * 1e3)
    return {
        "import_meter_ms": summarize(meter_ms),
        "baseline_ms": summarize(base_ms),
        "diff_ms": summarize(diff_ms),
    }


def _importtime(env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Self and cumulative microseconds per module imported by ``import meter`` (after site)."""
    stderr = _output(env, "-X", "importtime", "-c", "import meter").stderr
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    # The interpreter's own imports end with the top-level `site` line; the rest is meter's.
    last_site = max(i for i, line in enumerate(lines) if line.rstrip().endswith("| site"))
    out: dict[str, tuple[int, int]] = {}
    for line in lines[last_site + 1 :]:
        self_us, cumulative_us, name = (part.strip() for part in line[12:].split("|"))
        out[name] = (int(self_us), int(cumulative_us))
    return out


def run(quick: bool) -> dict[str, Any]:
    repeats = 5 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "pycache")
        warm = _env(cache, write=True)
        for _ in range(2):  # fill the bytecode cache and the page cache
            _wall_s("import meter", warm)
            _wall_s("pass", warm)
        cached = _paired(repeats, lambda: warm)

        # The same cache without meter's own files, read-only: only meter is compiled.
        package_dir = _output(warm, "-c", _PACKAGE_DIR).stdout.strip()
        no_meter = os.path.join(tmp, "pycache-without-meter")
        shutil.copytree(cache, no_meter)
        shutil.rmtree(os.path.join(no_meter, package_dir.lstrip(os.sep)), ignore_errors=True)
        cold = _env(no_meter, write=False)
        uncached = _paired(repeats, lambda: cold)

        in_process_ms = [
            float(_output(warm, "-c", _IN_PROCESS).stdout) * 1e3 for _ in range(repeats)
        ]
        profiles = [_importtime(warm) for _ in range(3 if quick else 7)]
        new_modules = int(_output(warm, "-c", _NEW_MODULES).stdout)

    per_module: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for profile in profiles:
        for name, times in profile.items():
            per_module[name].append(times)
    medians = {
        name: (
            statistics.median(t[0] for t in times),
            statistics.median(t[1] for t in times),
        )
        for name, times in per_module.items()
    }
    top_self = sorted(medians.items(), key=lambda kv: kv[1][0], reverse=True)[:5]
    total_us = medians.get("meter", (0, 0))[1]

    return {
        "repeats": repeats,
        **cached,
        "uncached": uncached,
        "in_process_ms": summarize(in_process_ms),
        "importtime_runs": len(profiles),
        "importtime_total_ms": total_us / 1e3,
        "importtime_top": [
            {"module": name, "self_ms": s / 1e3, "cumulative_ms": c / 1e3}
            for name, (s, c) in top_self
        ],
        "new_modules": new_modules,
        "budget_ms": BUDGET_MS,
        "pass": cached["diff_ms"]["median"] < BUDGET_MS,
    }

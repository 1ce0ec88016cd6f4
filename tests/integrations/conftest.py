"""Helpers for the integration tests: launching a job's ranks as subprocesses, like torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: A generous bound on one rank's run: a hung collective must fail the test, not stall CI.
RANK_TIMEOUT_S = 120


class PortTaken(Exception):
    """A rank could not bind the rendezvous port: another process took it first."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world_size: int, port: int, extra: Mapping[str, str]) -> dict[str, str]:
    """What torchrun gives each rank on one host, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES")
    }
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        NODE_RANK="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        METER_ZONE="FR",
    )
    env.update(extra)
    return env


@pytest.fixture
def run_ranks(tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """``run_ranks(script, world_size=2, env={...})``: run ``script`` (Python source) once per
    rank, as torchrun would on one host; each rank writes JSON to the path in ``argv[1]``; the
    results come back in rank order. A rank that fails fails the test with its output."""

    def run(script: str, *, world_size: int = 2, env: Mapping[str, str] | None = None) -> list[Any]:
        try:
            return run_once(script, world_size, env)
        except PortTaken:
            # free_port() gave a port another process took before rank 0 bound it (tests
            # run in parallel): once more, on a new port.
            return run_once(script, world_size, env)

    def run_once(script: str, world_size: int, env: Mapping[str, str] | None) -> list[Any]:
        path = tmp_path / "rank_script.py"
        path.write_text(script)
        port = free_port()
        procs = []
        for rank in range(world_size):
            out = tmp_path / f"rank{rank}.json"
            log = (tmp_path / f"rank{rank}.log").open("w")
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, str(path), str(out)],
                        cwd=tmp_path,
                        env=rank_env(rank, world_size, port, env or {}),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    out,
                    log,
                )
            )
        results = []
        try:
            for rank, (proc, out, log) in enumerate(procs):
                try:
                    code = proc.wait(timeout=RANK_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    code = None
                log.close()
                output = Path(log.name).read_text()
                if code != 0 and "address already in use" in output.lower():
                    raise PortTaken(output[-2000:])
                assert code == 0, f"rank {rank} exited with {code}:\n{output[-4000:]}"
                results.append({**json.loads(out.read_text()), "output": output})
        finally:
            for proc, _, log in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
        return results

    return run

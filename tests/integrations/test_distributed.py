"""Ranks: per-rank device selection, the sum over ranks, and a real two-process gloo gather."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from meter.integrations.distributed import (
    RankWindows,
    combine_ranks,
    describe,
    double_counting,
    gather_totals,
    measurement_from_dict,
    meter_for_rank,
    rank_meter,
)

from meter import DeviceMeasurement, Measurement, Meter
from meter.devices import discover
from meter.ranks import Ranks, from_env, select
from meter.testing import simulated_gpus

NO_IDLE = "/nonexistent/meter-idle.json"


@pytest.fixture
def no_rank_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name in ("METER_PER_RANK", "CUDA_VISIBLE_DEVICES", "METER_GPUS", "METER_NO_CPU"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def as_rank(monkeypatch: pytest.MonkeyPatch, local_rank: int, world_size: int) -> None:
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", str(world_size))


def keys(m: Meter) -> list[str]:
    return [d.key for d in m.devices]


# -- which rank am I ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"LOCAL_RANK": "0"}, None),  # no WORLD_SIZE: not a job we know
        ({"LOCAL_RANK": "0", "WORLD_SIZE": "1"}, None),  # a single process
        ({"LOCAL_RANK": "1", "RANK": "5", "WORLD_SIZE": "8"}, Ranks(5, 1, 8)),
        # Lightning's launcher: no RANK; NODE_RANK and LOCAL_WORLD_SIZE give it
        (
            {"LOCAL_RANK": "1", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"},
            Ranks(5, 1, 8),
        ),
        ({"LOCAL_RANK": "1", "NODE_RANK": "1", "WORLD_SIZE": "8"}, Ranks(None, 1, 8)),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, Ranks(1, 1, 2)),
        ({"LOCAL_RANK": "x", "WORLD_SIZE": "2"}, None),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2", "METER_PER_RANK": "0"}, None),
    ],
)
def test_ranks_from_env(env: dict[str, str], expected: Ranks | None) -> None:
    assert from_env(env) == expected


def test_select_rules() -> None:
    rank1 = Ranks(1, 1, 2)
    # ordinal = local rank; host devices only on local rank 0
    assert select(rank1, visible_gpus=2, cpu=True).gpus == [1]
    assert select(rank1, visible_gpus=2, cpu=True).cpu is False
    assert select(Ranks(0, 0, 2), visible_gpus=2, cpu=True).cpu is True
    # one GPU visible (per-rank CUDA_VISIBLE_DEVICES): that one
    assert select(rank1, visible_gpus=1, cpu=True).gpus == [0]
    # torch's current device, when set to something other than the default
    assert select(rank1, visible_gpus=4, cpu=True, cuda_device=3).gpus == [3]
    assert select(rank1, visible_gpus=4, cpu=True, cuda_device=0).gpus == [1]
    # explicit arguments win
    assert select(rank1, visible_gpus=2, cpu=True, gpus=[0]).gpus == [0]
    assert select(Ranks(0, 0, 2), visible_gpus=2, cpu=False).cpu is False
    # more ranks than GPUs: the extra rank meters none, and says so
    extra = select(Ranks(2, 2, 4), visible_gpus=2, cpu=True)
    assert extra.gpus == [] and extra.warnings and "LOCAL_RANK=2" in extra.warnings[0]
    # no GPU at all: nothing chosen (discovery reports why)
    assert select(rank1, visible_gpus=0, cpu=True).gpus is None
    # a single process: untouched
    assert select(None, visible_gpus=2, cpu=True) == select(
        Ranks(0, 0, 1), visible_gpus=2, cpu=True
    )


# -- discovery under torchrun, on simulated GPUs --------------------------------------------------


def test_each_rank_meters_its_gpu_and_rank0_the_host(
    no_rank_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with simulated_gpus([300.0, 150.0]):
        as_rank(no_rank_env, 1, 2)
        with caplog.at_level(logging.INFO, logger="meter"):
            m1 = Meter(idle_file=NO_IDLE, carbon=False)
        assert keys(m1) == ["gpu:1"]
        assert any("rank 1" in note and "gpu:1" in note for note in m1.devices[0].notes)
        assert "host devices (CPU, DRAM) are metered by local rank 0" in caplog.text
        m1.close()

        as_rank(no_rank_env, 0, 2)
        m0 = Meter(idle_file=NO_IDLE, carbon=False)
        assert keys(m0)[0] == "gpu:0"
        assert {d.kind for d in m0.devices} - {"gpu"}, "local rank 0 meters the host"
        assert [d.key for d in m0.devices if d.kind == "gpu"] == ["gpu:0"]
        m0.close()


def test_rank_selection_keeps_explicit_choices_and_can_be_turned_off(
    no_rank_env: pytest.MonkeyPatch,
) -> None:
    with simulated_gpus([300.0, 150.0]):
        as_rank(no_rank_env, 1, 2)
        explicit = Meter(gpus=[0], cpu=False, idle_file=NO_IDLE, carbon=False)
        assert keys(explicit) == ["gpu:0"]
        explicit.close()
        no_rank_env.setenv("METER_PER_RANK", "0")
        everything = Meter(cpu=False, idle_file=NO_IDLE, carbon=False)
        assert keys(everything) == ["gpu:0", "gpu:1"]
        everything.close()


def test_one_visible_gpu_per_rank(no_rank_env: pytest.MonkeyPatch) -> None:
    with simulated_gpus([300.0, 150.0]):
        as_rank(no_rank_env, 1, 2)
        no_rank_env.setenv("CUDA_VISIBLE_DEVICES", "1")
        m = Meter(cpu=False, idle_file=NO_IDLE, carbon=False)
        assert keys(m) == ["gpu:0"] and m.devices[0].index == 1  # NVML index 1: the 150 W one
        with m.measure("x") as w:
            time.sleep(0.5)  # several counter periods: an empty window right after start is
            # shorter than one and its average is only as good as the unlocked counter allows
        m.close()
    assert w.result is not None
    # 150 W, not 300 W: the bound only needs to tell the two GPUs apart
    assert w.result.devices["gpu:0"].avg_power_w == pytest.approx(150.0, rel=0.2)


def test_a_rank_without_a_gpu_meters_nothing(no_rank_env: pytest.MonkeyPatch) -> None:
    with simulated_gpus([300.0, 150.0]):
        found = discover(cpu=True, ranks=Ranks(2, 2, 4))
    assert found.devices == []
    assert any("LOCAL_RANK=2" in w for w in found.warnings)


def test_meter_for_rank_and_double_counting(no_rank_env: pytest.MonkeyPatch) -> None:
    with simulated_gpus([300.0, 150.0]):
        # the environment says nothing (ddp_spawn): the framework's ranks decide
        m, owned = rank_meter(Ranks(1, 1, 2))
        assert owned and keys(m) == ["gpu:1"]
        assert double_counting(m, Ranks(1, 1, 2)) == []
        m.close()
        everything = Meter(idle_file=NO_IDLE, carbon=False)
        problems = double_counting(everything, Ranks(1, 1, 2))
        assert len(problems) == 2 and "2 GPUs" in problems[0] and "host devices" in problems[1]
        assert double_counting(everything, None) == []
        everything.close()
        m = meter_for_rank(Ranks(0, 0, 2), cpu=False, carbon=False)
        assert keys(m) == ["gpu:0"]
        m.close()


# -- the sum over ranks -----------------------------------------------------------------------


def part(energy: float, duration: float, key: str, co2e: float | None) -> Measurement:
    dev = DeviceMeasurement(energy, energy / duration, energy / duration, "simulated", co2e_g=co2e)
    carbon = {"zone": "FR", "pue": 1.0, "intensity_g_per_kwh": 50.0, "fallbacks": []}
    return Measurement(
        "fit", 100.0, 100.0 + duration, duration, energy, {key: dev}, co2e_g=co2e, carbon=carbon
    )


def test_combine_ranks_sums_and_prefixes() -> None:
    a = part(300.0, 1.0, "gpu:0", 0.004)
    b = part(140.0, 0.9, "gpu:0", 0.002)
    total = combine_ranks([a, b.to_dict()], hosts=["n1", "n1"])
    assert total.energy_j == pytest.approx(440.0)
    assert total.co2e_g == pytest.approx(0.006)
    assert total.duration_s == 1.0
    assert sorted(total.devices) == ["rank0/gpu:0", "rank1/gpu:0"]
    assert total.devices["rank1/gpu:0"].energy_j == 140.0
    assert total.avg_power_w == pytest.approx(440.0)
    assert total.extra["world_size"] == 2
    assert [r["energy_j"] for r in total.extra["ranks"]] == [300.0, 140.0]
    assert total.carbon is not None and total.carbon["zone"] == "FR"
    assert total.carbon["intensity_g_per_kwh"] == pytest.approx(0.006 / (440 / 3.6e6))
    # a rank with nothing still counts as a rank
    partial = combine_ranks([a, None])
    assert partial.energy_j == 300.0 and "error" in partial.extra["ranks"][1]
    # round trip through the JSON form
    again = measurement_from_dict(total.to_dict())
    assert again.energy_j == total.energy_j and set(again.devices) == set(total.devices)
    assert "ranks" in again.extra
    assert "440.0 J" in describe(total) and "FR" in describe(total)


def test_gather_without_a_process_group_is_the_identity() -> None:
    m = part(10.0, 1.0, "gpu:0", None)
    assert gather_totals(m) is m
    assert gather_totals(m.to_dict()) == m.to_dict()
    assert gather_totals(None) is None


def test_rank_windows_never_raise_into_training(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        devices = ()

        def start(self) -> None:
            pass

        def measure(self, name: str, **options: Any) -> Any:
            raise RuntimeError("device fell off the bus")

    windows = RankWindows(Broken())  # type: ignore[arg-type]
    windows.setup(None)
    with caplog.at_level(logging.WARNING, logger="meter"):
        windows.open("epoch")
    assert not windows.is_open("epoch")
    assert windows.close("epoch") is None
    assert windows.gather(None) is None
    assert "could not open window 'epoch'" in caplog.text


# -- two real ranks over gloo ---------------------------------------------------------------------

GATHER_SCRIPT = """
import json, sys, time
import torch.distributed as dist
import meter
from meter.integrations.distributed import gather_totals

dist.init_process_group("gloo", init_method="env://")
m = meter.get_meter()
with m.measure("work") as w:
    time.sleep(0.4)
own = w.result
total = gather_totals(own)
as_dict = gather_totals(own.to_dict())
json.dump(
    {
        "devices": [d.key for d in m.devices],
        "own": own.to_dict(),
        "total": total.to_dict(),
        "dict_total": as_dict,
    },
    open(sys.argv[1], "w"),
)
dist.barrier()
dist.destroy_process_group()
"""


def test_two_gloo_ranks_gather_one_true_total(run_ranks: Callable[..., list[Any]]) -> None:
    ranks = run_ranks(GATHER_SCRIPT, env={"METER_SIMULATE_GPUS": "300,150"})
    r0, r1 = ranks
    # each rank its own GPU; the host (CPU) on local rank 0 only
    assert r0["devices"][0] == "gpu:0" and len(r0["devices"]) > 1
    assert r1["devices"] == ["gpu:1"]
    for r, watts in ((r0, 300.0), (r1, 150.0)):
        gpu = r["own"]["devices"][f"gpu:{r['devices'][0][-1]}"]
        assert gpu["method"] == "simulated"
        assert gpu["energy_j"] == pytest.approx(watts * r["own"]["duration_s"], rel=0.03)
    own_sum = r0["own"]["energy_j"] + r1["own"]["energy_j"]
    co2e_sum = r0["own"]["co2e_g"] + r1["own"]["co2e_g"]
    for r in ranks:  # every rank gets the same total, in the form it passed
        for total in (r["total"], r["dict_total"]):
            assert total["energy_j"] == pytest.approx(own_sum, rel=1e-12)
            assert total["co2e_g"] == pytest.approx(co2e_sum, rel=1e-12)
            assert total["world_size"] == 2
            assert "rank0/gpu:0" in total["devices"] and "rank1/gpu:1" in total["devices"]
            assert not any(k.startswith("rank1/cpu") for k in total["devices"])
            assert total["devices"]["rank1/gpu:1"]["energy_j"] == pytest.approx(
                r1["own"]["devices"]["gpu:1"]["energy_j"], rel=1e-12
            )

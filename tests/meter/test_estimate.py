"""The CPU estimate: TDP x utilisation from cpu_times() deltas, integrated between reads."""

from __future__ import annotations

import math
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from meter.devices.base import Device, Reading
from meter.devices.estimate import DEFAULT_CPU_TDP_W, CpuEstimate
from meter.errors import ConfigError, DeviceError

# The fields psutil.cpu_times() has on Linux.
CpuTimes = namedtuple(
    "CpuTimes",
    "user nice system idle iowait irq softirq steal guest guest_nice",
)


def times(
    busy: float = 0.0, idle: float = 0.0, iowait: float = 0.0, guest: float = 0.0
) -> CpuTimes:
    """CPU seconds since boot: ``busy`` split over user and system; guest is inside user."""
    return CpuTimes(
        user=busy / 2 + guest,
        nice=0.0,
        system=busy / 2,
        idle=idle,
        iowait=iowait,
        irq=0.0,
        softirq=0.0,
        steal=0.0,
        guest=guest,
        guest_nice=0.0,
    )


def sequence(*values: Any) -> Callable[[], Any]:
    it: Iterator[Any] = iter(values)
    return lambda: next(it)


def test_integrates_tdp_times_utilisation_exactly() -> None:
    cpu = CpuEstimate(
        tdp_w=100.0,
        cpu_times=sequence(
            times(busy=0, idle=0),
            times(busy=50, idle=40, iowait=10),  # 50 % busy over 2 s -> 50 W, 100 J
            times(busy=50 + 30, idle=50, iowait=10),  # 75 % busy over 1 s -> 75 W, 75 J
            times(busy=80, idle=150, iowait=10),  # idle over 4 s -> 0 W, 0 J
        ),
        clock=sequence(10.0, 12.0, 13.0, 17.0),
        model="Test CPU",
    )
    first = cpu.read()
    assert (first.energy_j, first.power_w) == (100.0, 50.0)
    second = cpu.read()
    assert (second.energy_j, second.power_w) == (175.0, 75.0)
    third = cpu.read()
    assert (third.energy_j, third.power_w) == (175.0, 0.0)


def test_guest_time_is_not_counted_twice() -> None:
    # 40 s of guest time are already inside user's 60: busy is 60 of 100, not 100 of 140.
    cpu = CpuEstimate(
        tdp_w=50.0,
        cpu_times=sequence(times(), times(busy=20, idle=40, guest=40)),
        clock=sequence(0.0, 1.0),
        model="x",
    )
    assert cpu.read().power_w == pytest.approx(50.0 * 60 / 100)


def test_no_tick_keeps_the_last_power_and_backwards_clock_is_clamped() -> None:
    same = times(busy=10, idle=10)
    cpu = CpuEstimate(
        tdp_w=10.0,
        cpu_times=sequence(times(), same, same, times(busy=10, idle=20)),
        clock=sequence(0.0, 1.0, 2.0, 1.5),
        model="x",
    )
    assert cpu.read() == Reading(energy_j=5.0, power_w=5.0)
    assert cpu.read().energy_j == 10.0  # no CPU tick in between: still 5 W for 1 s
    last = cpu.read()  # the clock stepped back: no time passed
    assert (last.energy_j, last.power_w) == (10.0, 0.0)


def test_info_says_estimated_not_measured() -> None:
    cpu = CpuEstimate(cpu_times=sequence(times()), clock=lambda: 0.0, model="AMD EPYC 9654")
    info = cpu.info
    assert (info.key, info.kind, info.method, info.counter, info.index) == (
        "cpu:0",
        "cpu",
        "estimated",
        True,
        0,
    )
    assert info.model == "AMD EPYC 9654 (estimate: TDP 100 W x utilisation)"
    assert "not a measurement" in info.notes[0]
    assert "RAPL" in info.notes[0]
    assert isinstance(cpu, Device)
    assert DEFAULT_CPU_TDP_W == 100.0
    cpu.close()


def test_model_from_cpuinfo_by_default() -> None:
    cpu = CpuEstimate(tdp_w=65.0)
    assert cpu.info.model.endswith("(estimate: TDP 65 W x utilisation)")
    reading = cpu.read()
    assert reading.energy_j is not None and reading.energy_j >= 0.0
    assert reading.power_w is not None and 0.0 <= reading.power_w <= 65.0


@pytest.mark.parametrize("tdp_w", [0, -5.0, math.nan, math.inf, True, "100"])
def test_bad_tdp_is_a_config_error(tdp_w: Any) -> None:
    with pytest.raises(ConfigError) as err:
        CpuEstimate(tdp_w, model="x")
    assert err.value.setting == "cpu_tdp_w"
    assert "positive number of watts" in str(err.value)
    assert "METER_CPU_TDP_W" in str(err.value)


def test_cpu_times_failing_mid_run_is_a_device_error() -> None:
    calls = iter([times()])

    def cpu_times() -> CpuTimes:
        try:
            return next(calls)
        except StopIteration:
            raise OSError("no /proc/stat") from None

    cpu = CpuEstimate(cpu_times=cpu_times, clock=lambda: 0.0, model="x")
    with pytest.raises(DeviceError) as err:
        cpu.read()
    assert err.value.device == "cpu:0"
    assert isinstance(err.value.__cause__, OSError)


def test_concurrent_reads_integrate_each_interval_once() -> None:
    # Every call to cpu_times() advances 1 s of busy time; every clock call 1 s: 100 % busy.
    lock = threading.Lock()
    state = {"t": 0.0, "busy": 0.0}

    def clock() -> float:
        with lock:
            state["t"] += 1.0
            return state["t"]

    def cpu_times() -> CpuTimes:
        with lock:
            state["busy"] += 1.0
            return times(busy=state["busy"])

    cpu = CpuEstimate(tdp_w=10.0, cpu_times=cpu_times, clock=clock, model="x")
    threads = [
        threading.Thread(target=lambda: [cpu.read() for _ in range(500)], name=f"r{i}")
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Opened at t=1; 2000 threaded reads, then this one at t=2002, all at 100 % busy.
    assert cpu.read().energy_j == pytest.approx(10.0 * 2001)

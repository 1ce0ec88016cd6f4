"""The CPU estimate: TDP x utilisation from cpu_times() deltas, integrated between reads; its
default TDP (per logical CPU), and its warning (once per process, with the fixes)."""

from __future__ import annotations

import logging
import math
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import meter.core
import meter.devices
from meter import Meter
from meter.devices import discover
from meter.devices.base import Device, Reading
from meter.devices.estimate import WATTS_PER_LOGICAL_CPU, CpuEstimate, default_tdp_w
from meter.errors import ConfigError, DeviceError
from meter.testing import FakeNVML, FakeRapl

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
    cpu = CpuEstimate(cpus=8, cpu_times=sequence(times()), clock=lambda: 0.0, model="AMD EPYC 9654")
    info = cpu.info
    assert (info.key, info.kind, info.method, info.counter, info.index) == (
        "cpu:0",
        "cpu",
        "estimated",
        True,
        0,
    )
    assert info.model == "AMD EPYC 9654 (estimate: TDP 28 W x utilisation)"
    assert "not a measurement" in info.notes[0]
    assert "RAPL permissions" in info.notes[0]
    # The default's arithmetic and source are in the notes, with how to override it.
    assert "TDP 28 W = 3.5 W x 8 logical CPUs" in info.notes[1]
    assert "Cloud Carbon Footprint" in info.notes[1] and "METER_CPU_TDP_W" in info.notes[1]
    assert not any("meter devices" in note for note in info.notes)
    assert isinstance(cpu, Device)
    cpu.close()


# -- the default TDP ----------------------------------------------------------------------------


@pytest.mark.parametrize("cpus", [1, 2, 64])
def test_default_tdp_scales_with_the_logical_cpus_psutil_sees(
    cpus: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[bool] = []

    def cpu_count(logical: bool = True) -> int:
        counted.append(logical)
        return cpus

    monkeypatch.setattr(psutil, "cpu_count", cpu_count)
    assert WATTS_PER_LOGICAL_CPU == 3.5
    assert default_tdp_w() == 3.5 * cpus
    cpu = CpuEstimate(cpu_times=sequence(times()), clock=lambda: 0.0, model="x")
    assert cpu.tdp_w == 3.5 * cpus
    assert cpu.tdp_basis == f"3.5 W x {cpus} logical CPU{'' if cpus == 1 else 's'}"
    assert cpu.info.method == "estimated"
    assert counted and all(counted)  # logical CPUs, not physical cores


def test_default_tdp_when_psutil_cannot_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: None)
    assert default_tdp_w() == 3.5


def test_a_given_tdp_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 64)
    cpu = CpuEstimate(65.0, cpu_times=sequence(times()), clock=lambda: 0.0, model="x")
    assert (cpu.tdp_w, cpu.tdp_basis) == (65.0, "given")
    assert "TDP 65 W (given)" in cpu.info.notes[0] and len(cpu.info.notes) == 1


def test_meter_cpu_tdp_w_and_the_argument_win_over_the_default(
    fake_rapl: Callable[..., FakeRapl], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 64)
    fake = root_only(fake_rapl)
    found = discover(nvml=FakeNVML([]), rapl_root=fake.root, rapl_reader=fake.reader)
    assert found.devices[0].info.model.endswith("(estimate: TDP 224 W x utilisation)")
    found = discover(
        nvml=FakeNVML([]), rapl_root=fake.root, rapl_reader=fake.reader, cpu_tdp_w=40.0
    )
    assert found.devices[0].info.model.endswith("(estimate: TDP 40 W x utilisation)")
    monkeypatch.setenv("METER_CPU_TDP_W", "95")
    m = Meter(**host_only(fake), **meter.core.options_from_env())
    try:
        assert m.infos[0].model.endswith("(estimate: TDP 95 W x utilisation)")
    finally:
        m.close()


# -- the warning --------------------------------------------------------------------------------


def root_only(fake_rapl: Callable[..., FakeRapl]) -> FakeRapl:
    fake = fake_rapl(sockets=1)
    fake.make_root_only()
    return fake


def host_only(fake: FakeRapl) -> dict[str, Any]:
    """Meter options for a host whose only CPU figure is the estimate (no GPU, no carbon)."""
    return {
        "nvml": FakeNVML([]),
        "rapl_root": fake.root,
        "rapl_reader": fake.reader,
        "idle_file": "/none",
        "carbon": False,
    }


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if nothing in this process had logged the once-per-process warnings yet."""
    monkeypatch.setattr(meter.devices, "_logged_once", set())


def estimate_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and "ESTIMATED" in r.getMessage()
    ]


@pytest.mark.usefixtures("fresh_process")
def test_estimate_warning_is_logged_once_across_two_meters(
    fake_rapl: Callable[..., FakeRapl], caplog: pytest.LogCaptureFixture
) -> None:
    fake = root_only(fake_rapl)
    caplog.set_level(logging.DEBUG, logger="meter")
    meters = [Meter(**host_only(fake)), Meter(**host_only(fake), cpu_tdp_w=50.0)]
    for m in meters:
        m.close()
    (record,) = estimate_records(caplog)
    message = record.getMessage()
    assert "METER_CPU_TDP_W" in message and "Meter(cpu_tdp_w=...)" in message
    assert '"RAPL permissions"' in message and "chmod -R a+r" in message  # the fix itself
    assert "meter devices" not in message
    # Each meter still lists it: the data is per meter, only the log line is once per process.
    assert all(any("ESTIMATED" in w for w in m.warnings) for m in meters)


@pytest.mark.usefixtures("fresh_process")
def test_discovery_logs_the_estimate_warning_once_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meter")
    missing = tmp_path / "no-powercap"
    logged = [
        discover(nvml=FakeNVML([]), rapl_root=missing).log_warnings(),
        discover(nvml=FakeNVML([]), rapl_root=missing, cpu_tdp_w=12.0).log_warnings(),
    ]
    assert [len(x) for x in logged] == [1, 0]
    (record,) = estimate_records(caplog)
    message = record.getMessage()
    assert "sudo modprobe intel_rapl_common" in message  # this case's fix, from open_rapl
    assert "METER_CPU_TDP_W" in message and '"RAPL permissions"' in message
    assert "logical CPU" in message  # the default TDP's arithmetic
    assert "meter devices" not in message


@pytest.mark.usefixtures("fresh_process")
def test_other_discovery_warnings_are_logged_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="meter")
    found = meter.devices.Discovery(warnings=["a GPU went away"])
    assert found.log_warnings() == found.log_warnings() == ["a GPU went away"]
    assert [r.getMessage() for r in caplog.records] == ["meter: a GPU went away"] * 2


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

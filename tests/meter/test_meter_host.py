"""A Meter on host devices: RAPL through a fake sysfs tree, the labelled CPU estimate,
CUDA synchronisation, and the pytest plugin's fixtures."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from meter import Meter
from meter.testing import FakeNVML, FakeRapl
from meter.testing.clock import FakeClock
from meter.testing.replay import advance


def no_gpus() -> FakeNVML:
    return FakeNVML([])


def feed(fake: FakeRapl, watts: dict[str, float], stop: threading.Event) -> None:
    """Add energy to the fake counters like the kernel would: every 1 ms."""
    last = time.perf_counter()
    while not stop.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        for key, w in watts.items():
            fake.add_energy(key, w * (now - last))
        last = now


def clocked_reader(fake: FakeRapl, clock: FakeClock, watts: dict[str, float]):
    """The fake tree's reader, with the counters advanced to ``clock`` at every read, like the
    kernel's, which moves them about every millisecond."""
    last = [clock()]

    def read(path: str) -> str:
        now = clock()
        if now > last[0]:
            for key, w in watts.items():
                fake.add_energy(key, w * (now - last[0]))
            last[0] = now
        return fake.reader(path)

    return read


def test_rapl_package_and_dram_through_a_meter(fake_rapl):
    fake = fake_rapl(sockets=2, dram=True, mmio_twins=True)
    watts = {"cpu:0": 60.0, "cpu:1": 40.0, "dram:0": 8.0, "dram:1": 6.0}
    clock = FakeClock()
    m = Meter(
        nvml=no_gpus(),
        rapl_root=fake.root,
        rapl_reader=clocked_reader(fake, clock, watts),
        idle_file="/none",
        clock=clock,
        sleep=clock.sleep,
        background=False,
    )
    assert [d.key for d in m.devices] == ["cpu:0", "cpu:1", "dram:0", "dram:1"]
    assert {d.method for d in m.devices} == {"counter"}
    try:
        m.start()
        with m.measure("work") as w:
            advance(m, clock, 0.6)
    finally:
        m.close()
    r = w.result
    for key, watts_in in watts.items():
        d = r.devices[key]
        assert d.method == "counter"
        assert d.energy_j == pytest.approx(watts_in * 0.6, rel=0.01), key
        assert not d.approximate  # RAPL moves continuously: no step model, no flag
    # The MMIO twins were not counted a second time.
    assert r.energy_j == pytest.approx(sum(watts.values()) * 0.6, rel=0.01)


def test_rapl_wraparound_inside_a_window(fake_rapl):
    fake = fake_rapl(sockets=1, dram=False, max_energy_range_uj=50_000_000)
    fake.set_energy_uj("cpu:0", 49_000_000)
    m = Meter(nvml=no_gpus(), rapl_root=fake.root, rapl_reader=fake.reader, idle_file="/none")
    m.start()
    with m.measure() as w:
        fake.add_energy("cpu:0", 3.0)  # crosses the 50 J range: wraps to 2 J
    m.close()
    assert w.result.devices["cpu:0"].energy_j == pytest.approx(3.0, abs=1e-6)


def test_root_only_rapl_falls_back_to_a_labelled_estimate(fake_rapl):
    fake = fake_rapl(sockets=1, dram=True)
    fake.make_root_only()
    m = Meter(nvml=no_gpus(), rapl_root=fake.root, rapl_reader=fake.reader, idle_file="/none")
    try:
        (cpu,) = m.devices
        assert cpu.key == "cpu:0" and cpu.method == "estimated"
        reasons = {u.key: u for u in m.unavailable}
        assert "cpu:0" in reasons and "dram:0" in reasons
        assert "chmod" in (reasons["cpu:0"].fix or "")
        assert any("ESTIMATED" in w for w in m.warnings)
        with m.measure() as w:
            time.sleep(0.2)
        assert w.result.devices["cpu:0"].method == "estimated"
    finally:
        m.close()


def test_estimate_can_be_refused(fake_rapl):
    fake = fake_rapl()
    fake.make_root_only()
    m = Meter(
        nvml=no_gpus(),
        rapl_root=fake.root,
        rapl_reader=fake.reader,
        cpu_estimate=False,
        idle_file="/none",
    )
    assert m.devices == ()
    assert m.unavailable  # still says why
    with m.measure() as w:
        pass
    assert w.result.energy_j == 0.0 and dict(w.result.devices) == {}
    m.close()


class FakeCuda:
    def __init__(self, initialized: bool = True) -> None:
        self.synchronized = 0
        self.initialized = initialized

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialized

    def synchronize(self) -> None:
        self.synchronized += 1


def test_cuda_sync_at_both_boundaries_only_when_asked(meter_factory, monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    m = meter_factory(300.0)
    with m.measure():
        pass
    assert cuda.synchronized == 0
    with m.measure(sync_cuda=True):
        pass
    assert cuda.synchronized == 2
    m2 = meter_factory(300.0, sync_cuda=True)
    with m2.measure():
        pass
    assert cuda.synchronized == 4


def test_cuda_sync_never_initialises_cuda(meter_factory, monkeypatch):
    cuda = FakeCuda(initialized=False)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    m = meter_factory(300.0, sync_cuda=True)
    with m.measure():
        pass
    assert cuda.synchronized == 0

"""RAPL zones on a fake powercap tree: discovery, joules, wraps, twins, permissions, threads."""

from __future__ import annotations

import os
import platform
import shutil
import threading
from pathlib import Path

import pytest

from meter.devices.base import Device, Unavailable
from meter.devices.rapl import DEFAULT_MAX_POWER_W, RaplZone, open_rapl, read_cpu_model
from meter.errors import BadReading, DeviceError, DeviceUnavailable
from meter.testing.clock import FakeClock
from meter.testing.rapl import FakeRapl

MODEL = "Intel(R) Xeon(R) Platinum 8480+"


@pytest.fixture
def cpuinfo(tmp_path: Path) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {MODEL}\n\n"
        f"processor\t: 1\nmodel name\t: {MODEL}\n"
    )
    return str(path)


def open_fake(
    fake: FakeRapl, cpuinfo: str, *, psys: bool = False, clock: FakeClock | None = None
) -> tuple[dict[str, RaplZone], list[Unavailable]]:
    """Open the fake tree as an unprivileged user would; zones by key."""
    zones, unavailable = open_rapl(
        fake.root, reader=fake.reader, cpuinfo=cpuinfo, psys=psys, clock=clock
    )
    return {z.info.key: z for z in zones}, unavailable


def overwrite(path: Path, text: str) -> None:
    """Replace a fake sysfs file's content in place (its mode is 0444, like the kernel's)."""
    path.chmod(0o644)
    path.write_text(text)


# -- discovery ---------------------------------------------------------------------------------


def test_one_socket_package_and_dram_core_uncore_skipped(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    zones, unavailable = open_fake(fake, cpuinfo)

    assert list(zones) == ["cpu:0", "dram:0"]
    assert unavailable == []
    cpu, dram = zones["cpu:0"].info, zones["dram:0"].info
    assert (cpu.kind, dram.kind) == ("cpu", "dram")
    for info in (cpu, dram):
        assert info.method == "counter"
        assert info.counter is True
        assert info.counted is True
        assert info.model == MODEL
        assert info.index == 0
    assert "intel-rapl:0 (package-0)" in cpu.notes[0]
    assert "intel-rapl:0:2 (dram)" in dram.notes[0]
    assert isinstance(zones["cpu:0"], Device)


def test_two_sockets(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", sockets=2)
    zones, unavailable = open_fake(fake, cpuinfo)

    assert list(zones) == ["cpu:0", "cpu:1", "dram:0", "dram:1"]
    assert unavailable == []
    assert [z.info.index for z in zones.values()] == [0, 1, 0, 1]

    fake.add_energy("cpu:1", 7.0)
    fake.add_energy("dram:1", 2.0)
    fake.add_energy("core:1", 5.0)  # part of package-1: must not show anywhere
    assert {k: z.read().energy_j for k, z in zones.items()} == {
        "cpu:0": 0.0,
        "cpu:1": 7.0,
        "dram:0": 0.0,
        "dram:1": 2.0,
    }


def test_server_layout_without_core_has_dram_as_first_subzone(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", core=False)
    assert fake.path("dram:0").name == "intel-rapl:0:0"
    zones, _ = open_fake(fake, cpuinfo)
    assert list(zones) == ["cpu:0", "dram:0"]


def test_no_dram(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", dram=False)
    zones, unavailable = open_fake(fake, cpuinfo)
    assert list(zones) == ["cpu:0"]
    assert unavailable == []


def test_symlinked_layout_like_real_sysfs(tmp_path: Path, cpuinfo: str) -> None:
    # On a real system /sys/class/powercap/intel-rapl:0 is a symlink into
    # /sys/devices/virtual/powercap/intel-rapl/intel-rapl:0 (subzones nested further down).
    fake = FakeRapl(tmp_path / "devices", sockets=2)
    cls = tmp_path / "class"
    cls.mkdir()
    for entry in os.listdir(fake.root):
        (cls / entry).symlink_to(fake.root / entry, target_is_directory=True)
    (cls / "intel-rapl:9").symlink_to(tmp_path / "gone")  # a dangling link is ignored

    zones, unavailable = open_rapl(cls, reader=fake.reader, cpuinfo=cpuinfo)
    assert [z.info.key for z in zones] == ["cpu:0", "cpu:1", "dram:0", "dram:1"]
    assert unavailable == []
    fake.add_energy("dram:0", 1.5)
    assert zones[2].read().energy_j == 1.5


def test_multi_die_packages_are_numbered_in_order(tmp_path: Path, cpuinfo: str) -> None:
    # Multi-die parts name each die's zone package-N-die-D (intel_rapl_common.c).
    fake = FakeRapl(tmp_path / "powercap", sockets=2)
    for key, name in (("cpu:0", "package-0-die-0"), ("cpu:1", "package-0-die-1")):
        overwrite(fake.path(key) / "name", name + "\n")
    zones, _ = open_fake(fake, cpuinfo)
    assert list(zones) == ["cpu:0", "cpu:1", "dram:0", "dram:1"]
    assert "package-0-die-1" in zones["cpu:1"].info.notes[0]
    fake.add_energy("dram:1", 3.0)
    assert zones["dram:1"].read().energy_j == 3.0


def test_model_falls_back_to_platform_processor(tmp_path: Path) -> None:
    assert read_cpu_model(str(tmp_path / "no-cpuinfo")) == platform.processor()
    arm = tmp_path / "cpuinfo"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")
    assert read_cpu_model(str(arm)) == platform.processor()


# -- joules ------------------------------------------------------------------------------------


def test_energy_is_joules_since_open(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", initial_uj=123_456_789_000)
    zones, _ = open_fake(fake, cpuinfo)
    cpu = zones["cpu:0"]

    assert cpu.read().energy_j == 0.0
    fake.add_energy("cpu:0", 12.5)
    assert cpu.read().energy_j == 12.5
    fake.add_energy("cpu:0", 0.000_001)  # one microjoule, the counter's unit
    assert cpu.read().energy_j == pytest.approx(12.500_001, abs=1e-12)
    assert cpu.read().energy_j == pytest.approx(12.500_001, abs=1e-12)  # no change, no drift
    assert cpu.read().power_w is None


def test_wraparound_uses_the_zones_own_range(tmp_path: Path, cpuinfo: str) -> None:
    max_uj = 1_000_000  # 1 J, so that wraps are cheap to provoke
    fake = FakeRapl(tmp_path / "powercap", max_energy_range_uj=max_uj)
    fake.set_energy_uj("cpu:0", max_uj - 100_000)  # 0.1 J below the wrap
    zones, _ = open_fake(fake, cpuinfo)
    cpu = zones["cpu:0"]

    fake.add_energy("cpu:0", 0.3)  # across the wrap
    assert fake.energy_uj("cpu:0") == 200_000
    assert cpu.read().energy_j == pytest.approx(0.3, abs=1e-12)
    for i in range(1, 6):  # more wraps (every other step), each seen by a read in between
        fake.add_energy("cpu:0", 0.7)
        assert cpu.read().energy_j == pytest.approx(0.3 + 0.7 * i, abs=1e-9)
    assert cpu.read().energy_j == pytest.approx(0.3 + 3.5, abs=1e-9)


def test_wraparound_with_the_default_intel_range(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", initial_uj=262_143_328_850 - 1_000_000)
    zones, _ = open_fake(fake, cpuinfo)
    fake.add_energy("cpu:0", 2.5)
    assert fake.energy_uj("cpu:0") == 1_500_000
    assert zones["cpu:0"].read().energy_j == pytest.approx(2.5, abs=1e-12)


def test_each_zone_wraps_with_its_own_max(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", max_energy_range_uj=10_000_000)
    # DRAM counters can have another range than the package's.
    overwrite(fake.path("dram:0") / "max_energy_range_uj", "65532000000\n")
    fake.set_energy_uj("dram:0", 9_000_000)
    clock = FakeClock()
    zones, _ = open_fake(fake, cpuinfo, clock=clock)
    assert zones["dram:0"].max_energy_range_uj == 65_532_000_000
    clock.advance(60.0)  # 65 kJ takes time: in a minute, within the zone's plausible power
    fake.set_energy_uj("dram:0", 1_000_000)  # a wrap at 65 532 J, not at 10 J
    assert zones["dram:0"].read().energy_j == pytest.approx(65_532 - 8, abs=1e-9)


# -- counter values that cannot be true ----------------------------------------------------------


def test_drop_without_wrapping_is_a_restart_not_262_kj(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", initial_uj=100_000_000)  # 100 J
    zones, _ = open_fake(fake, cpuinfo)
    cpu = zones["cpu:0"]
    fake.set_energy_uj("cpu:0", 0)  # drops to 0 without wrapping (max is 262 143 J)
    assert cpu.read().energy_j == 0.0  # not 262 043 J
    assert (cpu.validator.resets, cpu.validator.wraps) == (1, 0)
    fake.add_energy("cpu:0", 2.5)
    assert cpu.read().energy_j == 2.5


def test_step_back_is_a_bad_reading_then_reads_go_on(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", initial_uj=200_000_000_000)  # 200 kJ
    zones, _ = open_fake(fake, cpuinfo)
    cpu = zones["cpu:0"]
    fake.add_energy("cpu:0", 5.0)
    assert cpu.read().energy_j == 5.0
    fake.set_energy_uj("cpu:0", 199_000_000_000)  # 1 kJ below the value at open
    with pytest.raises(BadReading) as raised:
        cpu.read()
    assert raised.value.device == "cpu:0"
    assert "cpu:0 energy counter stepped back 1005.0 J" in str(raised.value)
    assert "without wrapping or restarting near zero: read ignored" in str(raised.value)
    fake.set_energy_uj("cpu:0", 200_009_000_000)  # the true counter, 4 J on
    assert cpu.read().energy_j == 9.0  # measured from the last good read: no phantom energy
    assert cpu.validator.rejected == 1


def test_implausible_jump_is_a_bad_reading(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    clock = FakeClock()
    zones, _ = open_fake(fake, cpuinfo, clock=clock)
    cpu = zones["cpu:0"]
    clock.advance(0.1)
    fake.add_energy("cpu:0", 100_000.0)  # 100 kJ in 0.1 s
    with pytest.raises(BadReading, match=r"jumped 100000\.0 J in 0\.1 s"):
        cpu.read()
    fake.set_energy_uj("cpu:0", 5_000_000)  # a one-off misread: the true value is 5 J
    clock.advance(0.1)
    assert cpu.read().energy_j == 5.0
    assert cpu.validator.rejected == 1


def test_counter_that_moved_for_good_is_rebased(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    clock = FakeClock()
    zones, _ = open_fake(fake, cpuinfo, clock=clock)
    cpu = zones["cpu:0"]
    for _ in range(10):  # 50 W for 1 s
        clock.advance(0.1)
        fake.add_energy("cpu:0", 5.0)
        cpu.read()
    assert cpu.read().energy_j == pytest.approx(50.0)
    fake.add_energy("cpu:0", 100_000.0)  # the counter jumps, then counts on
    results = []
    for _ in range(3):
        clock.advance(0.1)
        fake.add_energy("cpu:0", 5.0)
        try:
            results.append(cpu.read().energy_j)
        except BadReading:
            results.append(None)
    assert results[:2] == [None, None]
    # 50 J, + 0.1 s before the move estimated at 50 W, + 10 J counted after it: no 100 kJ.
    assert results[2] == pytest.approx(65.0)
    assert cpu.validator.rebases == 1 and cpu.validator.estimated_j == pytest.approx(5.0)


def test_genuine_wrap_is_still_counted(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", initial_uj=262_143_328_850 - 30_000_000)
    zones, _ = open_fake(fake, cpuinfo)
    fake.add_energy("cpu:0", 50.0)  # 30 J to the top, 20 J after the wrap
    assert fake.energy_uj("cpu:0") == 20_000_000
    assert zones["cpu:0"].read().energy_j == pytest.approx(50.0, abs=1e-9)
    assert zones["cpu:0"].validator.wraps == 1


def test_power_bound_from_the_zones_constraints(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", sockets=2)
    fake.set_power_limit("cpu:0", 125.0, max_power_w=150.0)  # PL1, and the part's maximum
    fake.set_power_limit("cpu:0", 200.0, constraint=1, name="short_term")  # PL2
    fake.set_power_limit("cpu:1", 5.0)  # a tiny (stale) limit: floored
    fake.set_power_limit("dram:1", 0.0, max_power_w=1e12)  # nothing sane: the default
    zones, _ = open_fake(fake, cpuinfo)
    assert zones["cpu:0"].max_power_w == 400.0  # the largest, 200 W, x 2
    assert zones["cpu:1"].max_power_w == 100.0
    assert zones["dram:0"].max_power_w == DEFAULT_MAX_POWER_W  # no constraint files
    assert zones["dram:1"].max_power_w == DEFAULT_MAX_POWER_W
    assert zones["cpu:0"].validator.max_power_w == 400.0
    assert (fake.path("cpu:0") / "constraint_1_name").read_text() == "short_term\n"
    assert (fake.path("cpu:0") / "constraint_0_power_limit_uw").read_text() == "125000000\n"


# -- MMIO twins and psys -----------------------------------------------------------------------


def test_mmio_twin_is_dropped_when_the_msr_zone_exists(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", sockets=2, mmio_twins=True)
    assert fake.path("cpu:0", mmio=True).name == "intel-rapl-mmio:0"
    zones, unavailable = open_fake(fake, cpuinfo)

    assert list(zones) == ["cpu:0", "cpu:1", "dram:0", "dram:1"]
    assert unavailable == []
    assert zones["cpu:0"].path.name == "intel-rapl:0"
    fake.add_energy("cpu:0", 4.0)  # lands in both twins; counted once
    assert zones["cpu:0"].read().energy_j == 4.0
    assert fake.energy_uj("cpu:0", mmio=True) == 4_000_000


def test_mmio_twin_is_kept_where_the_msr_zone_is_missing(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", mmio_twins=True)
    shutil.rmtree(fake.path("cpu:0"))
    zones, unavailable = open_fake(fake, cpuinfo)

    assert list(zones) == ["cpu:0", "dram:0"]
    assert unavailable == []
    cpu = zones["cpu:0"]
    assert cpu.path.name == "intel-rapl-mmio:0"
    assert any("MMIO" in note for note in cpu.info.notes)
    fake.add_energy("cpu:0", 1.25)
    assert cpu.read().energy_j == 1.25


def test_psys_only_on_request_and_not_counted(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", psys=True)
    assert fake.path("psys:0").name == "intel-rapl:1"

    zones, _ = open_fake(fake, cpuinfo)
    assert list(zones) == ["cpu:0", "dram:0"]

    zones, unavailable = open_fake(fake, cpuinfo, psys=True)
    assert list(zones) == ["cpu:0", "dram:0", "psys:0"]
    assert unavailable == []
    info = zones["psys:0"].info
    assert (info.kind, info.method, info.counter, info.counted) == ("psys", "counter", True, False)
    assert "not added to totals" in info.notes[0]
    assert "including package and DRAM" in info.notes[0]
    fake.add_energy("psys:0", 30.0)
    assert zones["psys:0"].read().energy_j == 30.0


# -- unreadable and missing --------------------------------------------------------------------


def test_root_only_energy_files_are_unavailable_with_the_fix(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    fake.make_root_only()
    zones, unavailable = open_fake(fake, cpuinfo)

    assert zones == {}
    assert [(u.key, u.kind) for u in unavailable] == [("cpu:0", "cpu"), ("dram:0", "dram")]
    cpu = unavailable[0]
    assert cpu.reason == (
        f"RAPL energy file {fake.path('cpu:0') / 'energy_uj'} is readable by root only "
        "(Linux >= 5.10, CVE-2020-8694)"
    )
    assert cpu.fix == (
        f"sudo chmod -R a+r {fake.root / 'intel-rapl'}  (until reboot; for a lasting fix add a "
        "udev rule, see README) or run as root"
    )
    assert cpu.model == MODEL


def test_one_root_only_zone_leaves_the_others(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap", sockets=2)
    fake.make_root_only("dram:1")
    zones, unavailable = open_fake(fake, cpuinfo)
    assert list(zones) == ["cpu:0", "cpu:1", "dram:0"]
    assert [u.key for u in unavailable] == ["dram:1"]
    assert "CVE-2020-8694" in unavailable[0].reason


def test_root_only_zone_opened_directly_raises_device_unavailable(tmp_path: Path) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    fake.make_root_only("cpu:0")
    zones, _ = open_rapl(fake.root, reader=fake.reader)
    assert [z.info.key for z in zones] == ["dram:0"]
    with pytest.raises(DeviceUnavailable) as err:
        RaplZone(fake.path("cpu:0"), zones[0].info, reader=fake.reader)
    assert "sudo chmod -R a+r" in str(err.value)
    assert err.value.fix is not None and "run as root" in err.value.fix


@pytest.mark.parametrize("make_root", [False, True], ids=["missing", "empty"])
def test_no_powercap_gives_one_unavailable_with_modprobe(tmp_path: Path, make_root: bool) -> None:
    root = tmp_path / "powercap"
    if make_root:
        root.mkdir()
        (root / "dtpm").mkdir()  # another powercap driver, not RAPL
    zones, unavailable = open_rapl(root)
    assert zones == []
    assert unavailable == [
        Unavailable(
            key="cpu",
            kind="cpu",
            reason=f"no RAPL powercap interface at {root} (not Linux, or a VM/container without "
            "it, or the intel_rapl_common module is not loaded)",
            fix="sudo modprobe intel_rapl_common; in a container, mount /sys/class/powercap "
            "read-only",
        )
    ]


def test_unreadable_counter_in_a_vm_is_unavailable(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    overwrite(fake.path("dram:0") / "energy_uj", "")  # listed, but no value
    zones, unavailable = open_fake(fake, cpuinfo)
    assert list(zones) == ["cpu:0"]
    assert [u.key for u in unavailable] == ["dram:0"]
    assert "cannot be read" in unavailable[0].reason
    assert unavailable[0].fix


# -- mid-run failures and closing --------------------------------------------------------------


def test_read_failing_mid_run_raises_device_error(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    broken = {"on": False}

    def reader(path: str) -> str:
        if broken["on"] and path.endswith("energy_uj"):
            raise OSError(5, "Input/output error", path)
        return fake.reader(path)

    zones, _ = open_rapl(fake.root, reader=reader, cpuinfo=cpuinfo)
    cpu = zones[0]
    fake.add_energy("cpu:0", 1.0)
    assert cpu.read().energy_j == 1.0
    broken["on"] = True
    with pytest.raises(DeviceError) as err:
        cpu.read()
    assert err.value.device == "cpu:0"
    assert isinstance(err.value.__cause__, OSError)
    assert "Input/output error" in str(err.value)


def test_permission_lost_mid_run_says_how_to_fix(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    zones, _ = open_fake(fake, cpuinfo)
    fake.make_root_only("cpu:0")
    with pytest.raises(DeviceUnavailable) as err:
        zones["cpu:0"].read()
    assert err.value.device == "cpu:0"
    assert err.value.fix is not None and "chmod" in err.value.fix


def test_close_is_idempotent_and_read_after_close_raises(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    zones, _ = open_rapl(fake.root, cpuinfo=cpuinfo)
    cpu = zones[0]
    cpu.close()
    cpu.close()
    with pytest.raises(DeviceError, match="closed"):
        cpu.read()
    for zone in zones[1:]:
        zone.close()


# -- the default descriptor path ---------------------------------------------------------------


def test_default_path_preads_a_kept_descriptor(tmp_path: Path, cpuinfo: str) -> None:
    max_uj = 5_000_000
    fake = FakeRapl(tmp_path / "powercap", max_energy_range_uj=max_uj, initial_uj=4_000_000)
    zones, unavailable = open_rapl(fake.root, cpuinfo=cpuinfo)
    assert unavailable == []
    cpu = zones[0]
    assert cpu.info.key == "cpu:0"

    fake.add_energy("cpu:0", 0.5)
    assert cpu.read().energy_j == 0.5
    fake.add_energy("cpu:0", 2.0)  # wraps: 4.5 J + 2 J -> 1.5 J
    assert cpu.read().energy_j == pytest.approx(2.5, abs=1e-12)

    # The descriptor stays open: the zone keeps reading the same file after it moved away.
    moved = tmp_path / "moved"
    fake.path("cpu:0").rename(moved)
    overwrite(moved / "energy_uj", "2500000\n")
    assert cpu.read().energy_j == pytest.approx(3.5, abs=1e-12)
    for zone in zones:
        zone.close()


def test_reader_path_reopens_every_time(tmp_path: Path, cpuinfo: str) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    zones, _ = open_fake(fake, cpuinfo)
    fake.path("cpu:0").rename(tmp_path / "moved")
    with pytest.raises(DeviceError) as err:
        zones["cpu:0"].read()
    assert isinstance(err.value.__cause__, FileNotFoundError)


# -- threads -----------------------------------------------------------------------------------


def test_concurrent_reads_count_every_joule_once(tmp_path: Path, cpuinfo: str) -> None:
    max_uj = 10_000_000_000  # 10 kJ
    fake = FakeRapl(
        tmp_path / "powercap", max_energy_range_uj=max_uj, initial_uj=max_uj - 100_000_000
    )
    zones, _ = open_fake(fake, cpuinfo)
    cpu = zones["cpu:0"]
    done = threading.Event()
    problems: list[str] = []

    def sample() -> None:
        last = 0.0
        while not done.is_set():
            energy = cpu.read().energy_j
            assert energy is not None
            if energy < last:
                problems.append(f"went backwards: {last} -> {energy}")
            last = energy

    threads = [threading.Thread(target=sample, name=f"reader-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(2000):  # 200 J in 0.1 J steps, across the wrap at 100 J
        fake.add_energy("cpu:0", 0.1)
    done.set()
    for t in threads:
        t.join()

    assert problems == []
    assert cpu.read().energy_j == pytest.approx(200.0, abs=1e-9)


# -- the fake itself ---------------------------------------------------------------------------


def test_fake_reader_refuses_root_only_files_even_as_root(tmp_path: Path) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    energy = str(fake.path("cpu:0") / "energy_uj")
    assert fake.reader(energy) == "0\n"
    fake.make_root_only("cpu:0")
    assert os.stat(energy).st_mode & 0o777 == 0o400
    with pytest.raises(PermissionError):
        fake.reader(energy)
    assert fake.reader(str(fake.path("cpu:0") / "name")) == "package-0\n"
    fake.add_energy("cpu:0", 1.0)  # the test can still drive a root-only counter
    assert fake.energy_uj("cpu:0") == 1_000_000


def test_fake_rejects_bad_input(tmp_path: Path) -> None:
    fake = FakeRapl(tmp_path / "powercap")
    with pytest.raises(KeyError, match="cpu:0, core:0"):
        fake.add_energy("cpu:7", 1.0)
    with pytest.raises(ValueError, match="only go up"):
        fake.add_energy("cpu:0", -1.0)
    with pytest.raises(ValueError, match="max_energy_range_uj"):
        fake.set_energy_uj("cpu:0", fake.max_energy_range_uj + 1)
    with pytest.raises(ValueError):
        FakeRapl(tmp_path / "other", sockets=0)

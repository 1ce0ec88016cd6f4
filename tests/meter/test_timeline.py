"""The run's power timeline (meter.timeline): bounded buckets, exact after merges, small records."""

from __future__ import annotations

import json
import math
import random

import pytest

from meter import Meter
from meter.cli import run_record
from meter.testing.clock import FakeClock
from meter.testing.nvml import FakeNVML
from meter.testing.replay import advance
from meter.testing.simgpu import SimulatedGPU
from meter.timeline import MAX_POINTS, Timeline

WALL0 = 1_800_000_000.0


def timeline(keys: tuple[str, ...] = ("gpu:0",), **options: float) -> Timeline:
    options.setdefault("initial_bucket_s", 1.0)
    return Timeline(keys, t0=10.0, wall0=WALL0, **options)  # type: ignore[arg-type]


def expected(
    samples: list[tuple[float, float]], t0: float, bucket_s: float, n: int
) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """Mean, min and max of the samples in each bucket, computed directly."""
    groups: list[list[float]] = [[] for _ in range(n)]
    for t, w in samples:
        groups[int((t - t0) // bucket_s)].append(w)
    mean = [round(sum(g) / len(g), 1) if g else None for g in groups]
    low = [round(min(g), 1) if g else None for g in groups]
    high = [round(max(g), 1) if g else None for g in groups]
    return mean, low, high


def test_mean_min_and_max_are_those_of_the_samples_after_any_number_of_merges() -> None:
    rng = random.Random(14)
    tl = timeline(max_points=16)
    samples: list[tuple[float, float]] = []
    t = 10.0
    for _ in range(3000):
        t += rng.uniform(0.05, 0.6)
        w = rng.uniform(50.0, 700.0)
        samples.append((t, w))
        tl.add(t, [w])
    d = tl.to_dict()
    assert d["bucket_s"] == 64.0  # 1 s doubled 6 times: about 975 s of samples in 16 buckets
    gpu = d["devices"]["gpu:0"]
    mean, low, high = expected(samples, 10.0, d["bucket_s"], len(gpu["mean_w"]))
    assert gpu["mean_w"] == pytest.approx(mean, abs=0.051)  # rounding of a sum's last bit
    assert gpu["min_w"] == low
    assert gpu["max_w"] == high


def test_the_number_of_points_stays_bounded_and_the_lists_equal_in_length() -> None:
    tl = timeline(("gpu:0", "gpu:1", "cpu:0"), max_points=100, initial_bucket_s=0.2)
    t = 10.0
    for k in range(20_000):
        t += 0.1
        # gpu:1 is unreadable now and then: its buckets go null, the lists stay aligned
        tl.add(t, [300.0, None if k % 7 == 0 else 150.0, 20.0])
        assert tl.points <= 100
    d = tl.to_dict()
    assert 50 < tl.points <= 100
    lengths = {len(v) for dev in d["devices"].values() for k, v in dev.items() if k.endswith("_w")}
    assert lengths == {tl.points}
    assert tl.points * d["bucket_s"] >= 20_000 * 0.1  # the span covers every sample


def test_bucket_edges_and_empty_buckets() -> None:
    tl = timeline(("gpu:0", "gpu:1"), max_points=4)
    tl.add(10.0, [100.0, 1.0])  # at t0: bucket 0
    tl.add(10.999, [300.0, None])  # just before the edge: bucket 0; gpu:1 unread
    tl.add(11.0, [200.0, 2.0])  # on the edge: bucket 1 (buckets are [start, end))
    tl.add(13.5, [50.0, 3.0])  # bucket 3; bucket 2 has no sample
    d = tl.to_dict()
    assert d == {
        "t0": WALL0,
        "bucket_s": 1.0,
        "devices": {
            "gpu:0": {
                "mean_w": [200.0, 200.0, None, 50.0],
                "min_w": [100.0, 200.0, None, 50.0],
                "max_w": [300.0, 200.0, None, 50.0],
            },
            "gpu:1": {
                "mean_w": [1.0, 2.0, None, 3.0],
                "min_w": [1.0, 2.0, None, 3.0],
                "max_w": [1.0, 2.0, None, 3.0],
            },
        },
    }
    tl.add(14.0, [400.0, math.nan])  # bucket 4 does not fit: pairs merge, 2 s wide
    d = tl.to_dict()
    assert d["bucket_s"] == 2.0
    assert d["devices"]["gpu:0"] == {
        "mean_w": [200.0, 50.0, 400.0],
        "min_w": [100.0, 50.0, 400.0],
        "max_w": [300.0, 50.0, 400.0],
    }
    assert d["devices"]["gpu:1"]["mean_w"] == [1.5, 3.0, None]  # NaN is no sample


def test_a_long_gap_merges_as_often_as_it_takes() -> None:
    tl = timeline(max_points=4)
    tl.add(10.5, [100.0])
    tl.add(10.0 + 1000.0, [200.0])  # bucket 1000 at 1 s: 256 s wide, bucket 3
    d = tl.to_dict()
    assert d["bucket_s"] == 256.0
    assert d["devices"]["gpu:0"]["mean_w"] == [100.0, None, None, 200.0]


def test_watts_are_rounded_to_a_tenth() -> None:
    tl = timeline()
    for w in (100.04, 100.12, 99.99):
        tl.add(10.5, [w])
    gpu = tl.to_dict()["devices"]["gpu:0"]
    assert (gpu["mean_w"], gpu["min_w"], gpu["max_w"]) == ([100.1], [100.0], [100.1])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        timeline(max_points=5)
    with pytest.raises(ValueError, match="positive"):
        timeline(initial_bucket_s=0.0)
    with pytest.raises(RuntimeError, match="attach"):
        timeline().sample()


class Wave:
    """A load that swings around ``mean_w`` every half hour, in closed form (a `PowerTrace`:
    a day of it costs nothing to integrate)."""

    name = "wave"

    def __init__(self, mean_w: float, swing_w: float = 37.3, period_s: float = 1800.0) -> None:
        self.mean_w, self.swing_w, self.rate = mean_w, swing_w, 2 * math.pi / period_s

    def power_w(self, t: float) -> float:
        return self.mean_w + self.swing_w * math.sin(self.rate * t)

    def cumulative_j(self, t: float) -> float:
        return self.mean_w * t + self.swing_w * (1 - math.cos(self.rate * t)) / self.rate


def fake_meter(
    clock: FakeClock, watts: list[float], interval_s: float, phase_lock: bool = True
) -> Meter:
    gpus = [SimulatedGPU(Wave(w), clock=clock) for w in watts]
    return Meter(
        nvml=FakeNVML(gpus),
        cpu=False,
        clock=clock,
        sleep=clock.sleep,
        background=False,
        carbon=False,
        interval_s=interval_s,
        idle_file="/nonexistent/idle.json",
        phase_lock=phase_lock,
    )


def test_attached_to_a_meter_it_follows_the_sampler_from_the_start() -> None:
    clock = FakeClock()
    m = fake_meter(clock, [300.0, 150.0], interval_s=0.1)
    m.start()
    tl = Timeline.attach(m)
    advance(m, clock, 30.0)
    tl.sample()
    d = tl.to_dict()
    assert d["t0"] == m.started_wall
    assert d["bucket_s"] == pytest.approx(0.2)
    assert set(d["devices"]) == {"gpu:0", "gpu:1"}
    gpu = d["devices"]["gpu:0"]
    assert gpu["method"] == "simulated" and gpu["kind"] == "gpu"
    assert len(gpu["mean_w"]) == pytest.approx(150, abs=1)
    assert None not in gpu["mean_w"]  # two intervals a bucket: the ticks' spread leaves none empty
    assert gpu["mean_w"][0] == pytest.approx(300.0, abs=2)
    assert gpu["mean_w"][-1] == pytest.approx(Wave(300.0).power_w(30.0), abs=2)
    m.close()


def test_a_24_hour_run_record_stays_under_500_kb() -> None:
    # Ten GPUs, sampled every 30 s on the fake clock, buckets starting at 0.2 s as at 10 Hz:
    # the widths double to 51.2 s as they would at 10 Hz, and every bucket gets a sample.
    clock = FakeClock()
    # (No counter phase lock: its calibration at every 30 s tick would make a day take 10 s.)
    m = fake_meter(clock, [400.0 + 50 * k for k in range(10)], interval_s=30.0, phase_lock=False)
    m.start()
    tl = Timeline.attach(m, initial_bucket_s=0.2)
    advance(m, clock, 24 * 3600.0)
    tl.sample()
    result = m.measure_since_start("train.py")
    m.close()
    record = run_record(
        result,
        run_id="0" * 32,
        command=["python", "train.py"],
        exit_code=0,
        interval_s=0.1,
        timeline=tl,
    )
    line = json.dumps(record, separators=(",", ":"))  # as JsonlWriter writes it
    print(f"a 24-hour record of 10 GPUs: {len(line.encode())} bytes")
    d = record["timeline"]
    assert d["bucket_s"] == pytest.approx(51.2)
    assert tl.points == 1688 <= MAX_POINTS
    assert all(None not in dev["mean_w"] for dev in d["devices"].values())
    assert len(line.encode()) < 500_000

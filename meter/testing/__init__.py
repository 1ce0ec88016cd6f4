"""Test helpers for meter and for its users: simulated NVIDIA GPUs under a fake NVML, a fake
RAPL sysfs tree, and a pytest plugin (fixtures ``simulated_meter``, ``meter_factory``,
``fake_rapl``; see `meter.testing.plugin`).

Set ``METER_SIMULATE_GPUS=300,150`` to run any process (the CLI, a server) on simulated GPUs;
every figure they produce is labelled ``simulated``.
"""

from meter.testing.carbon_servers import (
    FakeElectricityMaps,
    FakeUKCarbonIntensity,
    FakeWattTime,
)
from meter.testing.nvml import (
    FakeNVML,
    RecordingNVML,
    SimulatedGPU,
    parse_simulate_env,
    simulated_gpus,
)
from meter.testing.rapl import FakeRapl

__all__ = [
    "FakeElectricityMaps",
    "FakeNVML",
    "FakeRapl",
    "FakeUKCarbonIntensity",
    "FakeWattTime",
    "RecordingNVML",
    "SimulatedGPU",
    "parse_simulate_env",
    "simulated_gpus",
]

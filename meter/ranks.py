"""Which rank this process is, and what a rank meters so that no device is counted twice.

Under ``torchrun`` (and Lightning's or accelerate's launchers) each process of a job gets
``LOCAL_RANK`` and ``WORLD_SIZE`` (and usually ``RANK``). When there are several ranks and no
GPUs were chosen explicitly, `meter.devices.discover` makes each rank meter its own GPU, and
only local rank 0 of each host meter the host's CPU and DRAM. Summing the ranks' figures (see
`meter.integrations.distributed.gather_totals`) then counts every device once.

    >>> from_env({"LOCAL_RANK": "1", "RANK": "5", "WORLD_SIZE": "8"})
    Ranks(rank=5, local_rank=1, world_size=8)
    >>> from_env({}) is None  # a single process
    True
    >>> select(Ranks(5, 1, 8), visible_gpus=4, cpu=True).gpus
    [1]

``METER_PER_RANK=0`` turns this off: every rank then meters every device it can see.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meter import config

__all__ = ["PER_RANK_ENV", "Ranks", "Selection", "from_env", "select", "torch_cuda_device"]

#: Set to 0 to make every rank meter every device it sees (the default is per-rank selection).
PER_RANK_ENV: Final = "METER_PER_RANK"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a distributed job.

    ``rank`` is the global rank (``None`` when the launcher did not say, e.g. Lightning's own
    launcher sets only ``LOCAL_RANK``, ``NODE_RANK`` and ``WORLD_SIZE`` on a multi-node job);
    ``local_rank`` the rank on this host; ``world_size`` the number of ranks in the job.
    """

    rank: int | None
    local_rank: int
    world_size: int

    @property
    def distributed(self) -> bool:
        """True when this is one rank of several: per-rank selection applies."""
        return self.world_size > 1

    @property
    def host_leader(self) -> bool:
        """True on local rank 0, the rank that meters the host's CPU and DRAM."""
        return self.local_rank == 0

    def describe(self) -> str:
        rank = "rank ?" if self.rank is None else f"rank {self.rank}"
        return f"{rank} (local rank {self.local_rank}, world size {self.world_size})"


def _int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def from_env(environ: Mapping[str, str] | None = None) -> Ranks | None:
    """The ranks a launcher gave this process, or None for a single process.

    Reads ``LOCAL_RANK`` and ``WORLD_SIZE`` (both needed), and ``RANK`` (else ``NODE_RANK``
    with ``LOCAL_WORLD_SIZE``, else the local rank on a single-node job). None when either is
    missing or unreadable, when ``WORLD_SIZE`` is 1, or when ``METER_PER_RANK=0``.
    """
    env = os.environ if environ is None else environ
    if config.value(PER_RANK_ENV, env) is False:
        return None
    local_rank = _int(env, "LOCAL_RANK")
    world_size = _int(env, "WORLD_SIZE")
    if local_rank is None or world_size is None or world_size <= 1:
        return None
    rank = _int(env, "RANK")
    if rank is None:
        node_rank = _int(env, "NODE_RANK") or 0
        local_world = _int(env, "LOCAL_WORLD_SIZE")
        if local_world is not None:
            rank = node_rank * local_world + local_rank
        elif node_rank == 0:
            rank = local_rank
    return Ranks(rank=rank, local_rank=local_rank, world_size=world_size)


def torch_cuda_device() -> int | None:
    """torch's current CUDA device, when torch is already imported and CUDA initialised.

    Never imports torch (that alone takes seconds) and never initialises CUDA.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_initialized():
            return None
        return int(cuda.current_device())
    except Exception:
        return None


@dataclass(frozen=True)
class Selection:
    """What one rank meters: GPU ordinals (``None``: every visible GPU) and host devices or
    not; ``gpu_note`` and ``host_note`` say why, in words."""

    gpus: list[int] | None
    cpu: bool
    gpu_note: str | None = None
    host_note: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(n for n in (self.gpu_note, self.host_note) if n is not None)


def select(
    ranks: Ranks | None,
    *,
    visible_gpus: int,
    cpu: bool,
    gpus: list[int] | None = None,
    cuda_device: int | None = None,
) -> Selection:
    """Which devices ``ranks`` meters among ``visible_gpus`` GPUs.

    Explicit ``gpus`` always win, and ``cpu=False`` always means no host devices. Otherwise, on
    one rank of several:

    * GPU: the only visible GPU if there is one (per-rank ``CUDA_VISIBLE_DEVICES``); else
      ``cuda_device`` (torch's current device) when it is set and not 0; else the GPU whose
      ordinal is the local rank (torchrun's convention, ``torch.cuda.set_device(local_rank)``).
      A local rank with no GPU of its own (more ranks than GPUs on the host) meters none: the
      ranks that own the GPUs already meter all of their energy.
    * CPU and DRAM: local rank 0 only, since every rank on a host shares them.

        >>> chosen = select(Ranks(3, 1, 2), visible_gpus=2, cpu=True)
        >>> chosen.gpus, chosen.cpu
        ([1], False)
    """
    if ranks is None or not ranks.distributed:
        return Selection(gpus=gpus, cpu=cpu)
    who = ranks.describe()
    gpu_note: str | None = None
    warnings: list[str] = []
    chosen = gpus
    if gpus is not None:
        gpu_note = f"{who}: meters the GPUs it was given ({', '.join(map(str, gpus))})"
    elif visible_gpus == 1:
        chosen = [0]
        gpu_note = f"{who}: meters gpu:0, the only GPU visible to it"
    elif visible_gpus > 1:
        if cuda_device is not None and cuda_device != 0 and cuda_device < visible_gpus:
            ordinal, why = cuda_device, "torch's current CUDA device"
        else:
            ordinal, why = ranks.local_rank, "the GPU whose ordinal is its local rank"
        if ordinal < visible_gpus:
            chosen = [ordinal]
            gpu_note = f"{who}: meters gpu:{ordinal}, {why}"
        else:
            chosen = []
            warnings.append(
                f"{who}: LOCAL_RANK={ranks.local_rank} but only {visible_gpus} GPUs are visible, "
                "so this rank meters no GPU (the ranks that own the GPUs meter all of their "
                "energy). Pass gpus=[...] to choose one."
            )
    host_note: str | None = None
    if cpu and not ranks.host_leader:
        host_note = f"{who}: host devices (CPU, DRAM) are metered by local rank 0, not here"
        cpu = False
    elif cpu:
        host_note = f"{who}: meters this host's CPU and DRAM for all its ranks"
    return Selection(
        gpus=chosen, cpu=cpu, gpu_note=gpu_note, host_note=host_note, warnings=tuple(warnings)
    )

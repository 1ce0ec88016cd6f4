"""Distributed training: a meter per rank, and one true total for the whole job.

Under ``torchrun`` each rank meters its own GPU and local rank 0 of each host meters the
host's CPU and DRAM (`meter.ranks` has the rules; `meter.get_meter()` follows them by itself).
Each rank's figures therefore cover different devices, and `gather_totals` adds them up over
``torch.distributed``, so that a multi-GPU or multi-node run reports one total:

    >>> import meter
    >>> from meter.integrations.distributed import gather_totals
    >>> m = meter.get_meter()                                  # doctest: +SKIP
    >>> m.start()                                              # doctest: +SKIP
    >>> train()                                                # doctest: +SKIP
    >>> total = gather_totals(m.measure_since_start("run"))    # doctest: +SKIP
    >>> if torch.distributed.get_rank() == 0:                  # doctest: +SKIP
    ...     print(total.energy_j, sorted(total.devices))       # 'rank0/cpu:0', 'rank0/gpu:0', ...

Every rank must call `gather_totals` (it is a collective, like ``all_reduce``); without an
initialised process group it returns its argument unchanged.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, overload

import meter
from meter import DeviceMeasurement, Measurement, Meter, Window
from meter.errors import ConfigError
from meter.ranks import Ranks, from_env

__all__ = [
    "RankWindows",
    "Ranks",
    "combine_ranks",
    "describe",
    "double_counting",
    "gather_totals",
    "is_distributed",
    "measurement_from_dict",
    "meter_for_rank",
    "rank_meter",
]

log = logging.getLogger("meter")

_MEASUREMENT_FIELDS = {f.name for f in fields(Measurement)}
_DEVICE_FIELDS = {f.name for f in fields(DeviceMeasurement)}


def _dist() -> Any | None:
    """``torch.distributed`` when a process group is up, else None (torch is optional)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    try:
        return dist if dist.is_available() and dist.is_initialized() else None
    except Exception:
        return None


def is_distributed() -> bool:
    """True when ``torch.distributed`` has an initialised process group."""
    return _dist() is not None


# -- a meter per rank -------------------------------------------------------------------------


def meter_for_rank(ranks: Ranks, **options: Any) -> Meter:
    """A new `Meter` on the devices rank ``ranks`` should meter (`meter.ranks.select`).

    For launchers that do not export ``LOCAL_RANK``/``WORLD_SIZE`` (Lightning's ``ddp_spawn``,
    a notebook) but whose framework knows the ranks. ``METER_*`` variables apply as for
    `meter.get_meter`; ``options`` override them. The caller closes it.
    """
    from meter.core import options_from_env
    from meter.devices import discover

    opts = {**options_from_env(), **options}
    found = discover(
        gpus=opts.pop("gpus", None),
        cpu=opts.pop("cpu", True),
        cpu_estimate=opts.pop("cpu_estimate", True),
        cpu_tdp_w=opts.pop("cpu_tdp_w", None),
        ranks=ranks,
    )
    for warning in found.warnings:
        log.warning("meter: %s", warning)
    m = Meter(devices=found.devices, **opts)
    m.unavailable = found.unavailable
    m.warnings = [*found.warnings, *m.warnings]
    return m


def rank_meter(ranks: Ranks | None) -> tuple[Meter, bool]:
    """The meter a rank should use, and whether the caller owns (and so closes) it.

    The process default (`meter.get_meter`) when the environment already says this process is
    rank ``ranks`` (``torchrun``, Lightning's ``ddp``, ``accelerate launch``) or when the job
    is a single process; otherwise a new `meter_for_rank`.
    """
    if ranks is None or not ranks.distributed:
        return meter.get_meter(), False
    env = from_env()
    if env is not None and (env.local_rank, env.world_size) == (
        ranks.local_rank,
        ranks.world_size,
    ):
        return meter.get_meter(), False
    return meter_for_rank(ranks), True


def double_counting(m: Meter, ranks: Ranks | None) -> list[str]:
    """Why ``m`` would count devices that other ranks count too (empty when it does not).

    A rank should meter at most one GPU, and host devices only on local rank 0. A meter built
    before the launcher set ``LOCAL_RANK`` (or with ``METER_PER_RANK=0``) breaks that.
    """
    if ranks is None or not ranks.distributed:
        return []
    problems = []
    counted = [d for d in m.devices if d.counted]
    gpus = [d.key for d in counted if d.kind == "gpu"]
    host = [d.key for d in counted if d.kind != "gpu"]
    who = ranks.describe()
    if len(gpus) > 1:
        problems.append(
            f"{who} meters {len(gpus)} GPUs ({', '.join(gpus)}): with one GPU per rank, the "
            "other ranks' GPUs are counted again. Build the meter after the launcher has set "
            "LOCAL_RANK, or pass gpus=[local_rank]."
        )
    if host and not ranks.host_leader:
        problems.append(
            f"{who} meters host devices ({', '.join(host)}), which local rank 0 meters too: "
            "build it with cpu=False on the other ranks."
        )
    return problems


# -- one total for the job --------------------------------------------------------------------


def measurement_from_dict(d: Mapping[str, Any]) -> Measurement:
    """A `Measurement` from its `Measurement.to_dict` form (unknown keys go to ``extra``)."""
    devices = {
        key: DeviceMeasurement(**{k: v for k, v in dev.items() if k in _DEVICE_FIELDS})
        for key, dev in (d.get("devices") or {}).items()
    }
    known = {k: v for k, v in d.items() if k in _MEASUREMENT_FIELDS and k != "extra"}
    extra = {k: v for k, v in d.items() if k not in _MEASUREMENT_FIELDS and k != "avg_power_w"}
    known["devices"] = devices
    known.setdefault("name", "run")
    known.setdefault("start_time", 0.0)
    known.setdefault("end_time", known["start_time"])
    known.setdefault("duration_s", 0.0)
    known.setdefault("energy_j", sum(dev.energy_j for dev in devices.values() if dev.counted))
    return Measurement(**known, extra=extra)


def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def combine_ranks(
    parts: Sequence[Measurement | Mapping[str, Any] | None],
    *,
    hosts: Sequence[str] | None = None,
) -> Measurement:
    """One `Measurement` for a job from its ranks' own (``parts[r]`` is rank ``r``'s).

    Energy and CO2e (location, market, embodied) are summed; each device key is prefixed with
    its rank (``rank1/gpu:0``) so that keys do not collide; the duration is the longest rank's.
    ``extra["ranks"]`` lists each rank's host, energy, CO2e and devices; a rank with no
    measurement (``None``, e.g. its metering failed) contributes nothing and says so there.
    """
    ms = [
        None if p is None else p if isinstance(p, Measurement) else measurement_from_dict(p)
        for p in parts
    ]
    present = [m for m in ms if m is not None]
    devices: dict[str, DeviceMeasurement] = {}
    per_rank: list[dict[str, Any]] = []
    for rank, m in enumerate(ms):
        entry: dict[str, Any] = {"rank": rank}
        if hosts is not None and rank < len(hosts):
            entry["host"] = hosts[rank]
        if m is None:
            entry["error"] = "no measurement from this rank"
        else:
            for key, dev in m.devices.items():
                devices[f"rank{rank}/{key}"] = dev
            entry.update(
                energy_j=m.energy_j,
                co2e_g=m.co2e_g,
                duration_s=m.duration_s,
                devices=list(m.devices),
                zone=(m.carbon or {}).get("zone"),
            )
        per_rank.append(entry)
    energy = sum(m.energy_j for m in present)
    co2e = _sum([m.co2e_g for m in present])
    errors = [m.error for m in present if m.error is not None]
    return Measurement(
        name=present[0].name if present else "run",
        start_time=min((m.start_time for m in present), default=0.0),
        end_time=max((m.end_time for m in present), default=0.0),
        duration_s=max((m.duration_s for m in present), default=0.0),
        energy_j=energy,
        devices=devices,
        dynamic_energy_j=_sum([m.dynamic_energy_j for m in present]),
        co2e_g=co2e,
        co2e_market_g=_sum([m.co2e_market_g for m in present]),
        embodied_co2e_g=_sum([m.embodied_co2e_g for m in present]),
        carbon=_combine_carbon(present, energy, co2e),
        approximate=any(m.approximate for m in present),
        error=errors[0] if errors else None,
        extra={"world_size": len(ms), "ranks": per_rank},
    )


def _combine_carbon(
    ms: Sequence[Measurement], energy_j: float, co2e_g: float | None
) -> dict[str, Any] | None:
    blocks = [dict(m.carbon) for m in ms if m.carbon is not None]
    if not blocks:
        return None
    zones = sorted({str(b.get("zone")) for b in blocks})
    pues = {b.get("pue") for b in blocks}
    block = dict(blocks[0])
    if len(zones) > 1:
        block["zone"] = "mixed"
        block["zones"] = zones
    pue = next(iter(pues)) if len(pues) == 1 else None
    if isinstance(pue, (int, float)) and pue > 0 and energy_j > 0 and co2e_g is not None:
        block["intensity_g_per_kwh"] = co2e_g / (energy_j / 3.6e6 * pue)
    elif len(pues) > 1:
        block["pue"] = None
        block["intensity_g_per_kwh"] = None
    block["fallbacks"] = list(dict.fromkeys(f for b in blocks for f in b.get("fallbacks", [])))
    return block


@overload
def gather_totals(totals: Measurement, *, group: Any = None) -> Measurement: ...
@overload
def gather_totals(totals: Mapping[str, Any], *, group: Any = None) -> dict[str, Any]: ...
@overload
def gather_totals(totals: None, *, group: Any = None) -> Measurement | None: ...


def gather_totals(
    totals: Measurement | Mapping[str, Any] | None, *, group: Any = None
) -> Measurement | dict[str, Any] | None:
    """The sum over every rank of each rank's ``totals`` (see `combine_ranks`).

    With an initialised ``torch.distributed`` process group this is a collective: every rank
    of ``group`` (default: the whole job) must call it, and every rank gets the same sum, in
    the form it passed (a `Measurement`, or a dict like `Measurement.to_dict`). A rank whose
    metering failed passes ``None`` and still takes part. Without a process group, ``totals``
    comes back as it was.
    """
    dist = _dist()
    if dist is None:
        return dict(totals) if isinstance(totals, Mapping) else totals
    payload: dict[str, Any] | None = None
    if isinstance(totals, Measurement):
        payload = totals.to_dict()
    elif totals is not None:
        payload = dict(totals)
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, {"host": socket.gethostname(), "totals": payload}, group)
    combined = combine_ranks(
        [g["totals"] if g else None for g in gathered],
        hosts=[str(g["host"]) if g else "" for g in gathered],
    )
    if isinstance(totals, Mapping):
        return combined.to_dict()
    if totals is None and all(g is None or g["totals"] is None for g in gathered):
        return None
    return combined


# -- windows for framework callbacks ----------------------------------------------------------


class RankWindows:
    """Named windows on one rank's meter, for training-loop callbacks (Lightning, Transformers).

    Metering never breaks the job: a window that fails yields ``None`` and a log line, never
    an exception (bad configuration is the exception: it fails fast at `setup`). `gather` is a
    collective when ``torch.distributed`` is up; call it on every rank at the same point, with
    ``None`` where this rank has nothing, so no rank is left waiting.

        >>> windows = RankWindows()
        >>> windows.setup(None)                       # doctest: +SKIP
        >>> windows.open("epoch")                     # doctest: +SKIP
        >>> epoch = windows.gather(windows.close("epoch"))   # doctest: +SKIP
    """

    def __init__(
        self, meter: Meter | None = None, *, sync_cuda: bool | None = None, gather: bool = True
    ) -> None:
        self.meter = meter
        self.sync_cuda = sync_cuda
        self.gather_ranks = gather
        self.ranks: Ranks | None = None
        self._given = meter is not None
        self._owned = False
        self._open: dict[str, Window] = {}

    def setup(self, ranks: Ranks | None) -> None:
        """Choose the meter for rank ``ranks`` (unless one was given) and start it."""
        self.ranks = ranks
        try:
            if self.meter is None:
                self.meter, self._owned = rank_meter(ranks)
            for problem in double_counting(self.meter, ranks):
                log.warning("meter: %s", problem)
            self.meter.start()
        except ConfigError:
            raise
        except Exception:
            log.warning("meter: could not set up metering; training runs unmetered", exc_info=True)

    def is_open(self, name: str) -> bool:
        return name in self._open

    def open(self, name: str) -> None:
        """Open window ``name`` (closing one of that name left open)."""
        self.close(name)
        if self.meter is None:
            return
        try:
            window = self.meter.measure(name, sync_cuda=self.sync_cuda)
            window.start()
        except Exception:
            log.warning("meter: could not open window %r", name, exc_info=True)
            return
        self._open[name] = window

    def close(self, name: str, error: type[BaseException] | None = None) -> Measurement | None:
        """Close window ``name``: this rank's `Measurement`, or None (not open, or failed)."""
        window = self._open.pop(name, None)
        if window is None:
            return None
        try:
            return window.stop(error)
        except Exception:
            log.warning("meter: could not close window %r", name, exc_info=True)
            return None

    def close_all(self, error: type[BaseException] | None = None) -> dict[str, Measurement]:
        closed = {name: self.close(name, error) for name in list(self._open)}
        return {name: m for name, m in closed.items() if m is not None}

    def gather(self, m: Measurement | None) -> Measurement | None:
        """The sum of every rank's ``m`` (`gather_totals`); ``m`` itself when not distributed,
        when gathering is off, or (with a log line) when the gather fails."""
        if not self.gather_ranks:
            return m
        try:
            return gather_totals(m)
        except Exception:
            log.warning("meter: gathering the ranks' energy failed", exc_info=True)
            return m

    def teardown(self) -> None:
        """Close open windows, and the meter if this object built it."""
        self.close_all()
        if self._owned and self.meter is not None:
            try:
                self.meter.close()
            except Exception:
                log.warning("meter: could not close the meter", exc_info=True)
            self.meter = None
            self._owned = False


def describe(m: Measurement) -> str:
    """One line for a person: duration, energy, average power and CO2e.

    >>> from meter import Measurement
    >>> describe(Measurement("epoch", 0.0, 2.0, 2.0, 600.0, {}, co2e_g=0.0788))
    '2.00 s, 600.0 J (0.167 Wh), 300.0 W avg, 0.0788 g CO2e'
    """
    parts = [
        f"{m.duration_s:.2f} s",
        f"{m.energy_j:.1f} J ({m.energy_j / 3600:.3g} Wh)",
        f"{m.avg_power_w:.1f} W avg",
    ]
    if m.co2e_g is not None:
        zone = (m.carbon or {}).get("zone")
        parts.append(f"{m.co2e_g:.3g} g CO2e" + (f" ({zone})" if zone else ""))
    if m.co2e_market_g is not None:
        parts.append(f"{m.co2e_market_g:.3g} g CO2e market-based")
    methods = sorted(m.methods - {"counter", "sampled"})
    if methods:
        parts.append("includes " + " and ".join(methods) + " figures")
    if m.error:
        parts.append(f"ended by {m.error}")
    return ", ".join(parts)

"""Building a window's `Measurement` from the per-device joules its boundaries gave.

`MeasurementBuilder` holds what a result needs besides the window's own figures: how each device
measures (from the ledger's published snapshots), idle baselines, carbon accounting, embodied
emissions and sensor corrections. It reads published state only: no device call, no lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from meter.ledger import Ledger, Snapshot
from meter.measurement import DeviceMeasurement, Measurement

if TYPE_CHECKING:
    from meter.carbon.accounting import Accountant, CarbonRate
    from meter.carbon.embodied import Embodied
    from meter.devices.corrections import SensorCorrection

__all__ = ["MeasurementBuilder", "device_faults", "price"]


class Priced(Protocol):
    """A device's cumulative joules and the CO2e priced on them (`meter.ledger.CarbonState`,
    `meter.ledger.Snapshot`)."""

    @property
    def energy_j(self) -> float: ...

    @property
    def co2e_g(self) -> float: ...

    @property
    def co2e_market_g(self) -> float: ...


def price(energy_j: float, c0: Priced, c1: Priced, rate: CarbonRate | None) -> tuple[float, float]:
    """(location, market) CO2e grams of a window's energy at the mean rate the ledger priced
    its span with (so intensity changes inside the window count per sample interval); at the
    current rate when the ledger saw no energy over the span."""
    de = c1.energy_j - c0.energy_j
    if de > 1e-12:
        return (
            energy_j * (c1.co2e_g - c0.co2e_g) / de,
            energy_j * (c1.co2e_market_g - c0.co2e_market_g) / de,
        )
    loc, market = rate.rates if rate is not None else (0.0, None)
    return energy_j * loc, energy_j * (market or 0.0)


def device_faults(
    s0: Snapshot, s1: Snapshot, t0: float, t1: float, *, counter: bool, late: bool
) -> tuple[tuple[str, ...], bool]:
    """What went wrong with a device over a window from ``t0`` to ``t1``, from its snapshots
    at the two boundaries, and whether that makes its figure approximate: reads ignored as
    impossible, time it could not be read (covered by its counter, interpolated across, or
    missing), a boundary that did not wait for a call in progress, a counter lost mid-window."""
    faults: list[str] = []
    approximate = False
    rejected = s1.rejected_reads - s0.rejected_reads
    if rejected > 0:
        faults.append(
            f"{rejected} read{'s' if rejected > 1 else ''} ignored: the value could not be "
            "true (an energy counter that stepped back or jumped past the power limit)"
        )
    gap = s1.unreadable_until(t1) - s0.unreadable_until(t0)
    if gap > 1e-9:
        why = s1.last_error or s0.last_error or s1.error or "no answer from the device"
        if s1.unreadable_since is not None:
            approximate = True
            faults.append(
                f"not readable for {gap:.3g} s of this window ({why}): its energy there is "
                "missing (the figure stops where the reads stopped)"
            )
        elif counter:
            faults.append(
                f"not readable for {gap:.3g} s of this window ({why}); its energy counter "
                "covers the gap"
            )
        else:
            approximate = True
            faults.append(
                f"not readable for {gap:.3g} s of this window ({why}): its energy there is "
                "interpolated between the power readings around the gap (estimated)"
            )
    if late:
        approximate = True
        faults.append(
            "a boundary did not wait for a device call in progress: the last published figure "
            "was carried to it with its power"
        )
    if s1.fallback_at is not None and s0.fallback_at is None:
        approximate = True
        faults.append(
            "its energy counter stopped answering in this window: power readings are "
            "integrated from then on"
        )
    return tuple(faults), approximate


class MeasurementBuilder:
    """Turns a window's per-device joules into a `Measurement`."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        interval_s: float,
        idle_power_w: Mapping[str, float],
        accountant: Accountant | None,
        embodied: Mapping[str, Embodied],
        corrections: Sequence[SensorCorrection | None],
    ) -> None:
        self.ledger = ledger
        self.interval_s = interval_s
        self.idle_power_w = idle_power_w  # the meter's dict: later calibrations show here
        self.accountant = accountant
        self.embodied = embodied
        n = len(ledger.tracks)
        self.corrections = tuple(corrections) + (None,) * (n - len(corrections))

    def device_energy(
        self, i: int, snap: Snapshot, energy_j: float, duration_s: float, span_s: float
    ) -> tuple[float, bool]:
        """Device ``i``'s joules for a window as reported, and whether they are approximate:
        never 0 J for a window shorter than a counter's update period (power x time, flagged),
        and the sensor correction applied when one was asked for."""
        approximate = False
        if snap.stepping:
            steps = snap.steps
            if steps is None:
                approximate = True
                if energy_j <= 0 and duration_s > 0 and snap.power_w > 0:
                    # Never read 0 J for a window shorter than the counter's update period.
                    energy_j = snap.power_w * duration_s
            elif duration_s < steps.period_s:
                approximate = True
        elif not self.ledger.tracks[i].info.counter and duration_s < 2 * self.interval_s:
            # Power readings integrated over fewer than two sample intervals.
            approximate = True
        correction = self.corrections[i]
        if correction is not None:
            energy_j = correction.energy_j(energy_j, span_s)
        return energy_j, approximate

    def totals(
        self,
        *,
        t0: float,
        t1: float,
        energies: Sequence[float],
        idle_time_s: float | None,
        carbon0: Sequence[Priced] = (),
        carbon1: Sequence[Priced] = (),
    ) -> tuple[float, float | None]:
        """(joules, location CO2e g) of a window over the counted devices: what its
        `Measurement` would sum to (``energy_j``, ``co2e_g``: None without carbon accounting),
        without building it (window totals on the hot path)."""
        duration = max(t1 - t0, 0.0)
        span = duration if idle_time_s is None else idle_time_s
        tracks = self.ledger.tracks
        priced = self.accountant is not None and len(carbon0) == len(carbon1) == len(energies)
        rate = self.ledger.rate
        energy_total = co2e_total = 0.0
        for i, track in enumerate(tracks):
            if not track.info.counted:
                continue
            energy, _ = self.device_energy(i, track.snapshot(), energies[i], duration, span)
            energy_total += energy
            if priced:
                co2e_total += price(energy, carbon0[i], carbon1[i], rate)[0]
        return energy_total, co2e_total if priced else None

    def build(
        self,
        *,
        name: str,
        t0: float,
        t1: float,
        wall0: float,
        energies: Sequence[float],
        idle_time_s: float | None,
        group: str | None,
        error: str | None,
        carbon0: Sequence[Priced] = (),
        carbon1: Sequence[Priced] = (),
        snaps0: Sequence[Snapshot] = (),
        snaps1: Sequence[Snapshot] = (),
        late: Sequence[str] = (),
    ) -> Measurement:
        """The `Measurement` of a window from ``t0`` to ``t1`` (monotonic) that started at wall
        time ``wall0``, with ``energies`` per device (ledger order). ``idle_time_s`` is a shared
        window's share of the busy time (None: the whole duration). ``carbon0``/``carbon1``
        are the devices' carbon states at the boundaries (empty: no CO2e); ``snaps0``/
        ``snaps1`` their snapshots there (for `device_faults`), ``late`` the keys of devices
        whose boundary did not wait for a call in progress."""
        duration = max(t1 - t0, 0.0)
        span = duration if idle_time_s is None else idle_time_s
        ledger = self.ledger
        accountant = self.accountant
        have_carbon = accountant is not None and len(carbon0) == len(carbon1) == len(energies)
        have_market = have_carbon and accountant is not None and accountant.market is not None
        co2e_total = market_total = embodied_total = 0.0
        peaks = ledger.peak_power(t0, t1)
        devices: dict[str, DeviceMeasurement] = {}
        total = 0.0
        dynamic_total = 0.0
        have_idle = False
        any_approx = False
        have_snaps = len(snaps0) == len(snaps1) == len(energies)
        for i, track in enumerate(ledger.tracks):
            info = track.info
            snap = track.snapshot()
            energy, approximate = self.device_energy(i, snap, energies[i], duration, span)
            faults: tuple[str, ...] = ()
            if have_snaps:
                faults, faulty = device_faults(
                    snaps0[i], snaps1[i], t0, t1, counter=info.counter, late=info.key in late
                )
                approximate = approximate or faulty
            peak = peaks[i]
            correction = self.corrections[i]
            if correction is not None:
                peak = correction.power_w(peak)
            avg = energy / duration if duration > 0 else 0.0
            idle_w = self.idle_power_w.get(info.key)
            dynamic = None if idle_w is None else max(energy - idle_w * span, 0.0)
            co2e = market = None
            if have_carbon:
                co2e, market = price(energy, carbon0[i], carbon1[i], ledger.rate)
                if not have_market:
                    market = None
            emb = self.embodied.get(info.key)
            embodied_g = None if emb is None else emb.g_per_s * span
            devices[info.key] = DeviceMeasurement(
                energy_j=energy,
                avg_power_w=avg,
                peak_power_w=max(peak, avg),
                method=info.method,
                model=info.model,
                approximate=approximate,
                idle_power_w=idle_w,
                dynamic_energy_j=dynamic,
                counted=info.counted,
                error=snap.error,
                co2e_g=co2e,
                co2e_market_g=market,
                embodied_co2e_g=embodied_g,
                correction=None if correction is None else correction.family,
                faults=faults,
            )
            if info.counted:
                total += energy
                co2e_total += co2e or 0.0
                market_total += market or 0.0
                embodied_total += embodied_g or 0.0
                any_approx = any_approx or approximate
                if dynamic is not None:
                    dynamic_total += dynamic
                    have_idle = True
        carbon_block = None
        if have_carbon and accountant is not None:
            carbon_block = accountant.block(wall0, wall0 + duration, total, co2e_total)
        return Measurement(
            name=name,
            start_time=wall0,
            end_time=wall0 + duration,
            duration_s=duration,
            energy_j=total,
            devices=devices,
            dynamic_energy_j=dynamic_total if have_idle else None,
            co2e_g=co2e_total if have_carbon else None,
            co2e_market_g=market_total if have_market else None,
            embodied_co2e_g=embodied_total if self.embodied else None,
            carbon=carbon_block,
            group=group,
            approximate=any_approx,
            error=error,
        )

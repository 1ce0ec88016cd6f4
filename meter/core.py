"""`Meter`: a configured set of devices, one sampler, windows and sinks; and the process default."""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import math
import os
import shlex
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meter import config, cuda, idle
from meter.carbon.accounting import (
    DEFAULT_PUE,
    DEFAULT_REFRESH_S,
    Accountant,
    check_pue,
    market_basis,
)
from meter.carbon.accounting import options_from_env as carbon_env
from meter.carbon.embodied import Embodied
from meter.carbon.embodied import resolve as resolve_embodied
from meter.devices.base import Device, DeviceInfo, Unavailable
from meter.devices.corrections import SensorCorrection, resolve_correction
from meter.errors import ConfigError
from meter.ledger import CarbonState, Clock, Ledger
from meter.measurement import Measurement
from meter.results import MeasurementBuilder
from meter.sampler import CALIBRATE_TIMEOUT_S, Sampler
from meter.windows import (
    Boundary,
    Group,
    Window,
    publish_default,
    read_boundary,
    set_default_host,
    window_energies,
)

if TYPE_CHECKING:
    from meter.carbon.providers import Provider

log = logging.getLogger("meter")

#: Default sampling interval: 10 Hz (CodeCarbon samples every 15 s).
DEFAULT_INTERVAL_S = 0.1
#: Default size of the fine sample history (10 minutes at 10 Hz); memory stays flat.
DEFAULT_HISTORY = 6000
#: Default cap on the distinct window names of the per-name totals (`Meter.window_stats`), which
#: are the values of the Prometheus ``window`` label: every name adds four series to each scrape.
DEFAULT_MAX_WINDOWS = 100
#: The per-name totals' name for the windows whose names came after ``max_windows`` others.
OTHER_WINDOWS = "other"

Sink = Callable[[Measurement], None]


def check_interval(interval_s: Any, setting: str = "interval_s") -> float:
    """Validate a sampling interval in seconds."""
    try:
        value = float(interval_s)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{setting} must be a number of seconds, got {interval_s!r}; e.g. 0.1 for 10 Hz",
            setting=setting,
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{setting} must be a positive number of seconds, got {interval_s!r}; "
            "e.g. 0.1 samples at 10 Hz, 0.01 at 100 Hz",
            setting=setting,
        )
    if value < 0.001:
        raise ConfigError(
            f"{setting}={value} is below 1 ms: no power sensor updates that fast and the "
            "sampler would burn a core. Use 0.001 or more (0.1 is the default).",
            setting=setting,
        )
    if value > 3600:
        raise ConfigError(
            f"{setting}={value} is over an hour; use at most 3600 s.", setting=setting
        )
    return value


def check_max_windows(max_windows: Any, setting: str = "max_windows") -> int:
    """Validate a cap on distinct window names: a whole number >= 1."""
    if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
        raise ConfigError(
            f"{setting} must be a whole number of window names >= 1, got {max_windows!r}; "
            f"e.g. {DEFAULT_MAX_WINDOWS} (the default)",
            setting=setting,
        )
    return max_windows


@dataclass
class WindowStats:
    """Running totals per window name (for exporters)."""

    count: int = 0
    seconds: float = 0.0
    energy_j: float = 0.0
    #: Location-based CO2e of the windows, in grams (0 when carbon accounting is off).
    co2e_g: float = 0.0


class Meter:
    """A configured meter: devices, a sampler, windows, idle baselines and sinks.

    >>> from meter import Meter
    >>> from meter.testing import simulated_gpus
    >>> with simulated_gpus([300.0]):
    ...     m = Meter(cpu=False)
    ...     with m.measure("step") as w:
    ...         pass
    ...     m.close()
    >>> w.result.devices["gpu:0"].method
    'simulated'

    ``devices``: explicit devices (skips discovery). ``gpus``: ordinals among the visible GPUs
    (``CUDA_VISIBLE_DEVICES`` order). ``cpu``: meter CPU/DRAM (RAPL, or a labelled estimate when
    RAPL is unreadable and ``cpu_estimate`` is true). ``interval_s``: sampling interval.
    ``idle_power_w``: idle watts per device key (``{"gpu:0": 62.0}``), merged over the file
    written by ``meter calibrate``. ``sync_cuda``: synchronise CUDA at window boundaries.
    ``sinks``: callables that receive every `Measurement` at its window's exit;
    ``settled_sinks``: the same, once the window is settled (off the user's thread, so a window
    per step stays cheap; not for shared windows). ``gpu_correction``: "auto" (or a
    family such as "a100") undoes the published gain and offset of the GPUs' power sensors,
    labelled in every result (`meter.devices.corrections`); off by default. ``clock``
    (monotonic seconds) and ``sleep`` can be injected; with ``background=False`` no sampler
    thread runs and the caller drives sampling with ``meter.sampler.run_once()``
    (`meter.testing.clock.FakeClock`). ``max_windows``: distinct window names kept in the
    per-name totals (`window_stats`, the Prometheus ``window`` label); windows of later names
    are added to the totals of ``"other"`` (their own results keep their names), with one
    warning.
    """

    def __init__(
        self,
        *,
        devices: Sequence[Device] | None = None,
        gpus: Sequence[int] | None = None,
        cpu: bool = True,
        cpu_estimate: bool = True,
        cpu_tdp_w: float | None = None,
        rapl_root: str | os.PathLike[str] = "/sys/class/powercap",
        rapl_psys: bool = False,
        rapl_reader: Callable[[str], str] | None = None,
        nvml: Any = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        idle_power_w: Mapping[str, float] | None = None,
        idle_file: str | os.PathLike[str] | None = None,
        sync_cuda: bool = False,
        history: int = DEFAULT_HISTORY,
        phase_lock: bool = True,
        sinks: Sequence[Sink] = (),
        settled_sinks: Sequence[Sink] = (),
        clock: Clock = time.perf_counter,
        carbon: bool = True,
        zone: str | None = None,
        default_zone: str | None = None,
        carbon_provider: Provider | None = None,
        pue: float | None = None,
        market_factor_g_per_kwh: float | None = None,
        renewable_share: float | None = None,
        embodied: Mapping[str, object] | bool | None = None,
        carbon_refresh_s: float | None = None,
        sleep: Callable[[float], None] | None = None,
        background: bool = True,
        gpu_correction: str | None = None,
        max_windows: int = DEFAULT_MAX_WINDOWS,
    ) -> None:
        self.interval_s = check_interval(interval_s)
        #: Distinct window names in `window_stats`; later names count as `OTHER_WINDOWS`.
        self.max_windows = check_max_windows(max_windows)
        if history < 10:
            raise ConfigError(
                f"history={history} is too small; use at least 10 samples", setting="history"
            )
        self.unavailable: list[Unavailable] = []
        self.warnings: list[str] = []
        if devices is None:
            from meter.devices import discover

            found = discover(
                gpus=gpus,
                cpu=cpu,
                cpu_estimate=cpu_estimate,
                cpu_tdp_w=cpu_tdp_w,
                rapl_root=rapl_root,
                rapl_psys=rapl_psys,
                rapl_reader=rapl_reader,
                nvml=nvml,
                clock=clock,
            )
            devices = found.devices
            self.unavailable = found.unavailable
            self.warnings = found.warnings
            found.log_warnings()  # the CPU-estimate warning once per process
        self._devices = list(devices)
        #: Per device (ledger order): the sensor gain/offset correction asked for with
        #: ``gpu_correction`` (`meter.devices.corrections`), or None.
        self.corrections = _corrections(self._devices, gpu_correction)
        self.clock = clock
        self.accountant: Accountant | None = None
        if carbon:
            self.accountant = _build_accountant(
                zone=zone,
                default_zone=default_zone,
                provider=carbon_provider,
                pue=pue,
                market_factor_g_per_kwh=market_factor_g_per_kwh,
                renewable_share=renewable_share,
                refresh_s=carbon_refresh_s,
            )
            if self.accountant.zone.warning:
                self.warnings.append(self.accountant.zone.warning)
                log.warning("meter: %s", self.accountant.zone.warning)
        self.embodied: dict[str, Embodied] = (
            {} if embodied is False else resolve_embodied(self.infos, _as_mapping(embodied))
        )
        rate = self.accountant.rate if self.accountant is not None else None
        self.ledger = Ledger(self._devices, clock, history=history, rate=rate)
        self.sampler = Sampler(self.ledger, self.interval_s, phase_lock=phase_lock, sleep=sleep)
        #: False: no sampler thread; whoever drives the meter calls ``sampler.run_once()`` on
        #: the injected ``clock``/``sleep`` (a replay, a fake-clock test).
        self.background = background
        if self.accountant is not None:
            self.sampler.on_tick.append(self.accountant.maybe_refresh)
        self.sync_cuda = sync_cuda
        self.idle_power_w: dict[str, float] = idle.load(self.infos, idle_file)
        for key, watts in (idle_power_w or {}).items():
            if key not in self.ledger.keys:
                raise ConfigError(
                    f"idle_power_w names {key!r}, which this meter does not have; "
                    f"its devices are {', '.join(self.ledger.keys) or 'none'}",
                    setting="idle_power_w",
                )
            if not (isinstance(watts, (int, float)) and watts >= 0 and math.isfinite(watts)):
                raise ConfigError(
                    f"idle_power_w[{key!r}] must be watts >= 0, got {watts!r}",
                    setting="idle_power_w",
                )
            self.idle_power_w[key] = float(watts)
        #: Builds each window's `Measurement` (`meter.results`).
        self.results = MeasurementBuilder(
            self.ledger,
            interval_s=self.interval_s,
            idle_power_w=self.idle_power_w,
            accountant=self.accountant,
            embodied=self.embodied,
            corrections=self.corrections,
        )
        self.sinks: list[Sink] = list(sinks)
        #: Sinks that receive each gross window's `Measurement` when the window is settled
        #: (after the sampler's next tick, off the user's thread), not at its exit: a window
        #: per training step keeps its cheap exit.
        self.settled_sinks: list[Sink] = list(settled_sinks)
        if self.settled_sinks:  # windows still queued when the process ends reach them too
            atexit.register(_settle_at_exit, weakref.ref(self))
        self._window_stats: dict[str, WindowStats] = {}
        self._folded_windows = False  # a window name was counted as OTHER_WINDOWS (warned once)
        #: Windows added to the per-name totals so far (exporters tell a changed total by it).
        self.windows_accounted = 0
        #: Closed windows not settled yet (`Window.settle`): the sampler settles them after
        #: each tick, so a window's exit costs the user's thread only its boundary; the
        #: closing thread settles them when `meter.windows.MAX_DEFERRED_WINDOWS` are queued.
        self.deferred: collections.deque[Window] = collections.deque()
        self.sampler.after_tick.append(self.settle_windows)
        self._groups: dict[str, Group] = {}
        self._lock = threading.Lock()
        self._started = False
        #: True once `close` ran (a closed meter cannot start again).
        self.closed = False
        self.started_at: float | None = None
        self.started_wall: float | None = None
        self._start_boundary: Boundary | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def infos(self) -> tuple[DeviceInfo, ...]:
        return tuple(d.info for d in self._devices)

    @property
    def devices(self) -> tuple[DeviceInfo, ...]:
        """What this meter measures (see also ``unavailable``)."""
        return self.infos

    def start(self) -> Meter:
        """Start sampling (idempotent). Called by the first window.

        The first start waits (at most about half a second, once per meter) until the sampler
        has locked onto the energy counters' update phase, so that the very first window is
        interpolated like every later one.
        """
        if self._started and not self.closed:
            return self
        with self._lock:
            if self.closed:
                raise RuntimeError("this Meter was closed; create a new one")
            if self._started:
                return self
            if self.accountant is not None:
                self.accountant.start()
            if self.background:
                self.sampler.start()
                self.sampler.wait_ready(CALIBRATE_TIMEOUT_S + 0.5)
            else:
                self.sampler.run_once()  # the first tick and the counters' lock, on ``clock``
            self.started_wall = time.time()
            self._start_boundary = read_boundary(self.ledger, read=True)
            self.started_at = self._start_boundary.t
            self._started = True
        return self

    def wait_ready(self, timeout_s: float = 2.0) -> bool:
        """Start, then wait until the sampler has ticked and locked onto the counters."""
        self.start()
        return self.sampler.wait_ready(timeout_s)

    def close(self) -> None:
        """Stop the sampler and close the devices (idempotent)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self.sampler.stop()
        self.settle_windows()
        for dev in self._devices:
            try:
                dev.close()
            except Exception:
                log.debug("meter: closing %s failed", dev.info.key, exc_info=True)

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- windows -----------------------------------------------------------------------------

    def measure(self, name: str | None = None, **options: Any) -> Window:
        """A window on this meter: ``with m.measure("epoch") as w:`` or ``@m.measure()``."""
        return Window(name, meter=self, **options)

    def group(self, name: str) -> Group:
        """The shared-window group called ``name`` (created on first use)."""
        group = self._groups.get(name)
        if group is None:
            with self._lock:
                group = self._groups.setdefault(name, Group(name, self.ledger))
        return group

    def synchronize(self) -> None:
        cuda.synchronize()

    @property
    def window_stats(self) -> dict[str, WindowStats]:
        """Per window name, the totals of the windows closed so far (what exporters show)."""
        self.settle_windows()
        return self._window_stats

    def settle_windows(self) -> None:
        """Settle every closed window still queued (`meter.windows.Window.settle`)."""
        deferred = self.deferred
        while deferred:
            try:
                window = deferred.popleft()
            except IndexError:  # another thread took the last one
                return
            window.settle()

    def account(self, name: str, seconds: float, energy_j: float, co2e_g: float) -> None:
        """Add a finished window to the per-name totals (what exporters show).

        The totals keep at most ``max_windows`` names (plus `OTHER_WINDOWS`): each name is a
        value of the Prometheus ``window`` label, so a name per request or per step would add
        series without end. A window whose name arrives after the cap is full is added to the
        totals of `OTHER_WINDOWS`, so no joule is dropped; the first time, a warning says so.
        """
        first_folded: str | None = None
        with self._lock:
            totals = self._window_stats
            stats = totals.get(name)
            if stats is None:
                if len(totals) - (OTHER_WINDOWS in totals) >= self.max_windows:
                    if not self._folded_windows:
                        self._folded_windows = True
                        first_folded = name
                    name = OTHER_WINDOWS
                    stats = totals.get(name)
                if stats is None:
                    stats = totals[name] = WindowStats()
            self.windows_accounted += 1
            stats.count += 1
            stats.seconds += seconds
            stats.energy_j += energy_j
            stats.co2e_g += co2e_g
        if first_folded is not None:
            log.warning(
                "meter: window %r is counted as %r in the per-name totals (the Prometheus "
                "label window=%r): this meter keeps max_windows=%d window names, and every "
                "later new name is counted as %r too (a window's own result keeps its name). "
                "Raise the cap with Meter(max_windows=...) or METER_MAX_WINDOWS, or use fewer "
                "distinct names (not one per request or per step).",
                config.short(first_folded),
                OTHER_WINDOWS,
                OTHER_WINDOWS,
                self.max_windows,
                OTHER_WINDOWS,
            )

    def deliver(self, m: Measurement) -> None:
        """Hand a `Measurement` to every sink. Never raises."""
        for sink in list(self.sinks):
            try:
                sink(m)
            except Exception:
                log.warning("meter: sink %r failed", sink, exc_info=True)

    def record(self, m: Measurement) -> None:
        """Account a finished window built elsewhere: per-name totals and every sink."""
        self.account(m.name, m.duration_s, m.energy_j, m.co2e_g or 0.0)
        self.deliver(m)

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    # -- whole-run figures -------------------------------------------------------------------

    def refresh(self) -> None:
        """Read every device now, so that what exporters read (the published snapshots) is
        current: before a final export. Never raises."""
        for track in self.ledger.tracks:
            track.observe()

    def totals(self) -> dict[str, float]:
        """Cumulative joules per device (ledger counts, not since the start; no device read)."""
        _, energies = self.ledger.energies_at(read=False)
        return dict(zip(self.ledger.keys, energies, strict=True))

    @property
    def start_state(self) -> tuple[CarbonState, ...]:
        """Per device, in ``ledger.tracks`` order, its cumulative joules and CO2e when the meter
        started (at ``started_at``); empty before `start`. Exporters subtract it so their
        counters count from the start of the meter."""
        start = self._start_boundary
        if start is None:
            return ()
        # Joules as the start boundary took them (at started_at); CO2e as last published then,
        # plus the joules between that publication and the start at the rates in force.
        loc, market = self.ledger.rate.rates if self.ledger.rate is not None else (0.0, None)
        out = []
        for energy, snap in zip(start.energy_j, start.snapshots, strict=True):
            gap = energy - snap.energy_j
            out.append(
                CarbonState(
                    energy, snap.co2e_g + gap * loc, snap.co2e_market_g + gap * (market or 0.0)
                )
            )
        return tuple(out)

    def embodied_co2e_g(self) -> dict[str, float]:
        """Embodied (manufacturing) CO2e grams per device amortised since `start` (no device
        read; empty with ``embodied=False``, zeros before the start)."""
        t0 = self.started_at
        elapsed = max(self.clock() - t0, 0.0) if t0 is not None else 0.0
        return {key: emb.g_per_s * elapsed for key, emb in self.embodied.items()}

    def measure_since_start(self, name: str = "run", error: str | None = None) -> Measurement:
        """A `Measurement` of everything since `start()` (what ``meter run`` reports)."""
        self.start()
        start = self._start_boundary
        assert start is not None and self.started_wall is not None
        end = read_boundary(self.ledger, read=True)
        energies = window_energies(self.ledger, start, end, read=True)
        return self.results.build(
            carbon0=start.carbon,
            carbon1=end.carbon,
            snaps0=start.snapshots,
            snaps1=end.snapshots,
            late=start.late + end.late,
            name=name,
            t0=start.t,
            t1=end.t,
            wall0=self.started_wall,
            energies=energies,
            idle_time_s=None,
            group=None,
            error=error,
        )


def _corrections(
    devices: Sequence[Device], setting: str | None
) -> tuple[SensorCorrection | None, ...]:
    """The sensor correction of each device for ``gpu_correction`` (GPUs only); a note on each
    corrected device says so, and a GPU whose family has no published fit is left as is."""
    out: list[SensorCorrection | None] = []
    for device in devices:
        info = device.info
        correction = resolve_correction(setting, info.model) if info.kind == "gpu" else None
        if correction is not None:
            device.info = dataclasses.replace(info, notes=(*info.notes, correction.note))
        elif info.kind == "gpu" and (setting or "").strip().lower() == "auto":
            log.info(
                "meter: %s (%s): no published sensor fit for this family, not corrected",
                info.key,
                info.model,
            )
        out.append(correction)
    return tuple(out)


def _as_mapping(embodied: Mapping[str, object] | bool | None) -> Mapping[str, object] | None:
    if embodied is None or embodied is True:
        return None
    if isinstance(embodied, Mapping):
        return embodied
    raise ConfigError(
        f"embodied={embodied!r}: give a mapping like {{'gpu:0': (164.0, 3.0)}}, or False",
        setting="embodied",
    )


def _build_accountant(
    *,
    zone: str | None,
    default_zone: str | None,
    provider: Provider | None,
    pue: float | None,
    market_factor_g_per_kwh: float | None,
    renewable_share: float | None,
    refresh_s: float | None,
) -> Accountant:
    from meter.carbon.providers import provider_from_env
    from meter.carbon.zones import resolve_zone

    env = carbon_env()
    resolved = resolve_zone(zone, default=default_zone)
    pue = check_pue(pue) if pue is not None else env.get("pue", DEFAULT_PUE)
    if market_factor_g_per_kwh is None and renewable_share is None:
        market_factor_g_per_kwh = env.get("market_factor_g_per_kwh")
        renewable_share = env.get("renewable_share")
    market = market_basis(market_factor_g_per_kwh, renewable_share, resolved.record.cfe_share)
    return Accountant(
        resolved,
        provider if provider is not None else provider_from_env(),
        pue=pue,
        market=market,
        refresh_s=refresh_s if refresh_s is not None else env.get("refresh_s", DEFAULT_REFRESH_S),
    )


# -- the process default -----------------------------------------------------------------------

_default: Meter | None = None
_default_lock = threading.Lock()


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Meter options from the ``METER_*`` environment variables (`meter.config`); bad values
    fail fast, naming the variable. Variables that are set but not declared get one warning
    each, naming the closest known one (a typo is not silently ignored)."""
    _warn_unknown(environ)
    opts: dict[str, Any] = {}
    interval = config.raw("METER_INTERVAL_S", environ)
    if interval is not None:
        opts["interval_s"] = check_interval(interval, "METER_INTERVAL_S")
    gpus = config.raw("METER_GPUS", environ)
    if gpus is not None:
        try:
            opts["gpus"] = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"METER_GPUS={config.short(gpus)!r} must be comma-separated GPU ordinals, "
                "e.g. METER_GPUS=0,1",
                setting="METER_GPUS",
            ) from None
    tdp = config.value("METER_CPU_TDP_W", environ)
    if tdp is not None:
        opts["cpu_tdp_w"] = tdp
    if config.value("METER_SYNC_CUDA", environ):
        opts["sync_cuda"] = True
    correction = config.raw("METER_GPU_CORRECTION", environ)
    if correction is not None:
        resolve_correction(correction, "")  # a bad family fails fast
        opts["gpu_correction"] = correction
    if config.value("METER_NO_CPU", environ):
        opts["cpu"] = False
    max_windows = config.value("METER_MAX_WINDOWS", environ)
    if max_windows is not None:
        opts["max_windows"] = check_max_windows(max_windows, "METER_MAX_WINDOWS")
    output = config.raw("METER_RUN_OUTPUT", environ)
    if output is not None:
        opts["settled_sinks"] = [_run_windows(output, config.raw("METER_RUN_ID", environ))]
    return opts


def _settle_at_exit(ref: weakref.ref[Meter]) -> None:
    meter = ref()
    if meter is not None:
        meter.settle_windows()


def _run_windows(path: str, run_id: str | None) -> Sink:
    """The sink that appends this process's windows to the file of the ``meter run`` it runs
    under (``METER_RUN_OUTPUT``), tagged with the run's id (``METER_RUN_ID``)."""
    from meter.exporters.jsonl import WindowRecords

    try:
        return WindowRecords(path, run_id=run_id)
    except OSError as exc:
        raise ConfigError(
            f"METER_RUN_OUTPUT={config.short(path)!r}: {exc}", setting="METER_RUN_OUTPUT"
        ) from None


def report_command(output: str) -> str:
    """The command that makes the HTML report of a ``meter run --output`` file.

    >>> report_command("runs/a b.jsonl")
    "meter report 'runs/a b.jsonl' -o report.html"
    """
    return f"meter report {shlex.quote(output)} -o report.html"


def run_report_hint(environ: Mapping[str, str] | None = None) -> str | None:
    """Under ``meter run --output F`` (``METER_RUN_OUTPUT``): the line that says how to make
    F's report once the run has ended; None otherwise. What the training callbacks end with."""
    output = config.raw("METER_RUN_OUTPUT", environ)
    if output is None:
        return None
    return f"meter: report (once `meter run` has ended): {report_command(output)}"


_warned_unknown: set[str] = set()


def _warn_unknown(environ: Mapping[str, str] | None) -> None:
    for name, close in config.unknown(environ):
        if name in _warned_unknown:
            continue
        _warned_unknown.add(name)
        hint = f"; did you mean {close}?" if close else ""
        log.warning(
            "meter: %s is not a meter setting and is ignored%s (`meter --help` lists them)",
            name,
            hint,
        )


def get_meter() -> Meter:
    """The process-wide default `Meter` (built on first use from ``METER_*`` variables)."""
    global _default
    m = _default
    if m is not None:
        return m
    with _default_lock:
        if _default is None:
            _default = Meter(**options_from_env())
            publish_default(_default)
        return _default


def set_meter(m: Meter | None) -> Meter | None:
    """Replace the process default (None to rebuild lazily); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, m
        publish_default(m)
    return previous


#: Measure a block or a function: ``meter.measure("epoch")`` makes a `Window` on the process
#: default meter (``meter=`` another). It is the `Window` class itself, so that a window per
#: training step costs one call less. See `Window`.
measure = Window


set_default_host(get_meter)

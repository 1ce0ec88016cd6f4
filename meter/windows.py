"""Windows: spans of time over the ledger, opened by `measure()` and the middleware, and the
arithmetic of their boundaries.

A *gross* window sees the whole device energy between its start and end. A *shared* window
belongs to a `Group`; energy spent while several windows of a group are open is split equally
among them, through a per-group integral ``S(t) = integral of dE / n(t)`` (n = open windows):
a window's share is ``S(end) - S(start)``, O(1) per window, and the shares of a group sum to
the device energy over the time any of them was open.

`read_boundary` takes a window's boundary (a device read where it pays, the published state
otherwise) and `refine_start` improves a start at the window's exit, when more is known. A
window reaches its meter through the small `WindowHost` protocol; this module never imports
`meter.core` (the process default is handed in by `set_default_host`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple, Protocol, TypeVar

from meter.ledger import CarbonState, Ledger, Snapshot
from meter.measurement import Measurement
from meter.results import MeasurementBuilder

log = logging.getLogger("meter")

F = TypeVar("F", bound=Callable[..., Any])


class Boundary(NamedTuple):
    """A window boundary: the time, and per device (ledger order) the joules then, the raw
    counter value of a counter not yet phase-locked (else None), and the published snapshot
    (whose carbon state prices the window)."""

    t: float
    energy_j: tuple[float, ...]
    raw_j: tuple[float | None, ...]
    snapshots: tuple[Snapshot, ...]

    @property
    def carbon(self) -> tuple[CarbonState, ...]:
        return tuple(s.carbon for s in self.snapshots)


_NO_RAW: dict[int, tuple[None, ...]] = {}


def read_boundary(ledger: Ledger, read: bool) -> Boundary:
    """Every device at one instant: read where it pays and ``read``, else from the published
    state (`meter.ledger.Track.energy_now`)."""
    t = ledger.clock()
    tracks = ledger.tracks
    energies = tuple([track.energy_now(t, read) for track in tracks])
    snapshots = tuple([track.snapshot() for track in tracks])
    raws: tuple[float | None, ...]
    if read and not all(s.steps is not None or not s.stepping for s in snapshots):
        raws = tuple([track.raw_for_retro(read) for track in tracks])
    else:  # every counter is locked (the usual case): nothing to redo at exit
        n = len(tracks)
        raws = _NO_RAW.get(n) or _NO_RAW.setdefault(n, (None,) * n)
    return Boundary(t, energies, raws, snapshots)


def refine_start(ledger: Ledger, start: Boundary, read: bool) -> tuple[float, ...]:
    """A window's start joules improved at its exit, now that more is known: phase-locked
    counters are interpolated between the values published around the start (or, read before
    their lock existed, re-interpolated from that read); power devices that were not read at
    the start are interpolated between the samples around it instead of extrapolated."""
    past: tuple[float, ...] | None = None
    out = list(start.energy_j)
    for i, track in enumerate(ledger.tracks):
        raw = start.raw_j[i] if i < len(start.raw_j) else None
        if track.snapshot().stepping or raw is not None:
            better = track.retro_energy(start.t, raw)
            if better is not None:
                out[i] = better
        elif not track.info.counter and not (read and track.reads_at_boundaries):
            # (A power device read at the boundary already has its figure from that read.)
            if past is None:
                past = ledger.energy_at_past(start.t)
            if past is not None:
                out[i] = past[i]
    return tuple(out)


class WindowHost(Protocol):
    """What a window needs from its meter (`meter.Meter` is one)."""

    ledger: Ledger
    results: MeasurementBuilder
    sync_cuda: bool
    sinks: list[Callable[[Measurement], None]]

    def start(self) -> Any: ...

    def synchronize(self) -> None: ...

    def group(self, name: str) -> Group: ...

    def account(self, name: str, seconds: float, energy_j: float, co2e_g: float) -> None: ...

    def deliver(self, m: Measurement) -> None: ...


class _Closed(NamedTuple):
    """Everything a closed window's `Measurement` is built from, when someone asks for it."""

    builder: MeasurementBuilder
    name: str
    t0: float
    t1: float
    wall0: float
    energies: tuple[float, ...]
    idle_time_s: float | None
    group: str | None
    error: str | None
    carbon0: tuple[Snapshot, ...]
    carbon1: tuple[Snapshot, ...]

    def build(self) -> Measurement:
        return self.builder.build(
            name=self.name,
            t0=self.t0,
            t1=self.t1,
            wall0=self.wall0,
            energies=self.energies,
            idle_time_s=self.idle_time_s,
            group=self.group,
            error=self.error,
            carbon0=self.carbon0,
            carbon1=self.carbon1,
        )


#: Returns the process default meter (set by `meter.core`, which owns it).
_default_host: Callable[[], WindowHost] | None = None


def set_default_host(factory: Callable[[], WindowHost]) -> None:
    """Where windows without a ``meter=`` find theirs (`meter.core.get_meter`)."""
    global _default_host
    _default_host = factory


class Group:
    """Windows that share the devices (e.g. concurrent requests of one server)."""

    def __init__(self, name: str, ledger: Ledger) -> None:
        self.name = name
        self.ledger = ledger
        self._lock = threading.Lock()
        self.open_windows = 0
        n = len(ledger.tracks)
        self._share = [0.0] * n  # S(t) per device
        self._time_share = 0.0  # integral of dt / n(t): a window's share of the time
        self._last_energy: tuple[float, ...] = (0.0,) * n
        self._last_t = 0.0
        #: Energy per device spent while at least one window of the group was open.
        self.busy_energy_j = [0.0] * n
        self.busy_s = 0.0

    def _advance(self, t: float, energies: tuple[float, ...]) -> None:
        n = self.open_windows
        # Clamp per device so the group's energy never steps back (estimates made at slightly
        # different times may disagree by a hair); then the shares add up exactly.
        energies = tuple(max(e, last) for e, last in zip(energies, self._last_energy, strict=True))
        if n > 0:
            for i, e in enumerate(energies):
                de = e - self._last_energy[i]
                self._share[i] += de / n
                self.busy_energy_j[i] += de
            dt = max(t - self._last_t, 0.0)
            self._time_share += dt / n
            self.busy_s += dt
        self._last_energy = energies
        self._last_t = max(t, self._last_t)

    def enter(self, read: bool) -> tuple[float, tuple[float, ...], float]:
        """Open one window: returns (time, S per device, time share) at its start."""
        with self._lock:
            t, energies = self.ledger.energies_at(read)
            self._advance(t, energies)
            self.open_windows += 1
            return t, tuple(self._share), self._time_share

    def exit(self, read: bool) -> tuple[float, tuple[float, ...], float]:
        with self._lock:
            t, energies = self.ledger.energies_at(read)
            self._advance(t, energies)
            self.open_windows = max(self.open_windows - 1, 0)
            return t, tuple(self._share), self._time_share


class Window:
    """A measured span: context manager (sync and async) and decorator, fresh state per use.

    Made by `meter.measure()`; see there.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        meter: WindowHost | None = None,
        group: str | None = None,
        sync_cuda: bool | None = None,
        read_devices: bool = True,
        on_result: Callable[[Measurement], None] | None = None,
    ) -> None:
        self.name = name
        self._meter = meter
        self.group = group
        self.sync_cuda = sync_cuda
        self.read_devices = read_devices
        self.on_result = on_result
        self._result: Measurement | None = None
        self._closed: _Closed | None = None
        self._started = False
        self._wall0 = 0.0
        self._start: Boundary | None = None  # a gross window's start
        self._t0 = 0.0
        self._s0: tuple[float, ...] = ()  # a shared window's group integral at its start
        self._ts0 = 0.0
        self._c0: tuple[Snapshot, ...] = ()
        self._group: Group | None = None
        self._live_meter: WindowHost | None = None

    # -- decorator ---------------------------------------------------------------------------

    def _fresh(self, name: str) -> Window:
        return Window(
            name,
            meter=self._meter,
            group=self.group,
            sync_cuda=self.sync_cuda,
            read_devices=self.read_devices,
            on_result=self.on_result,
        )

    def __call__(self, fn: F) -> F:
        name = self.name or getattr(fn, "__qualname__", None) or repr(fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh(name):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh(name):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Window:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(exc_type)  # returns None: an exception in the block propagates unchanged

    async def __aenter__(self) -> Window:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- start / stop ------------------------------------------------------------------------

    def _host(self) -> WindowHost:
        if self._meter is not None:
            return self._meter
        if _default_host is None:
            raise RuntimeError("meter.windows: no default meter; import meter first")
        return _default_host()  # may raise ConfigError: bad configuration fails fast

    @property
    def result(self) -> Measurement | None:
        """The window's `Measurement` once it closed (None while open, or if metering failed).
        Built on first use: closing a window only totals it, so a window nobody looks at costs
        no more than that."""
        closed = self._closed
        if self._result is None and closed is not None:
            self._closed = None
            try:
                self._result = closed.build()
            except Exception:
                log.warning(
                    "meter: could not build the result of window %r", self.name, exc_info=True
                )
        return self._result

    def start(self) -> None:
        """Open the window. Metering errors are logged, never raised into the user's code
        (bad configuration is the exception: it fails fast when the meter is built)."""
        if self._started:
            raise RuntimeError(
                "this window is already open; use a new meter.measure(...) for each block "
                "(a decorated function gets a fresh window per call)"
            )
        self._started = True
        self._result = None
        self._closed = None
        meter = self._host()
        try:
            meter.start()
            self._live_meter = meter
            if self._want_sync(meter):
                meter.synchronize()
            self._wall0 = time.time()
            if self.group is not None:
                self._group = meter.group(self.group)
                self._c0 = meter.ledger.snapshots()
                self._t0, self._s0, self._ts0 = self._group.enter(self.read_devices)
            else:
                self._start = read_boundary(meter.ledger, self.read_devices)
                self._t0, self._c0 = self._start.t, self._start.snapshots
        except Exception:
            log.warning(
                "meter: could not open window %r; the block runs unmetered",
                self.name,
                exc_info=True,
            )
            self._live_meter = None

    def stop(self, exc_type: type[BaseException] | None = None) -> Measurement | None:
        """Close the window and return its `Measurement` (also in ``self.result``)."""
        self._close(exc_type)
        return self.result

    def _close(self, exc_type: type[BaseException] | None) -> None:
        """Close the window: its totals go to the meter now; its `Measurement` is built when
        asked for (at once when the meter has sinks or the window an ``on_result``)."""
        meter = self._live_meter
        self._started = False
        if meter is None:
            return
        self._live_meter = None
        try:
            if self._want_sync(meter):
                meter.synchronize()
            idle_time: float | None = None
            if self._group is not None:
                t1, s1, ts1 = self._group.exit(self.read_devices)
                c1 = meter.ledger.snapshots()
                energies = tuple([b - a for a, b in zip(self._s0, s1, strict=True)])
                idle_time = ts1 - self._ts0  # this window's share of the busy time
            else:
                assert self._start is not None
                end = read_boundary(meter.ledger, self.read_devices)
                t1, c1 = end.t, end.snapshots
                e0 = refine_start(meter.ledger, self._start, self.read_devices)
                energies = tuple(
                    [b - a if b > a else 0.0 for a, b in zip(e0, end.energy_j, strict=True)]
                )
            name = self.name or "window"
            builder = meter.results
            energy, co2e = builder.totals(
                t0=self._t0,
                t1=t1,
                energies=energies,
                idle_time_s=idle_time,
                carbon0=self._c0,
                carbon1=c1,
            )
            closed = _Closed(
                builder,
                name,
                self._t0,
                t1,
                self._wall0,
                energies,
                idle_time,
                self.group,
                exc_type.__name__ if exc_type is not None else None,
                self._c0,
                c1,
            )
        except Exception:
            log.warning("meter: could not close window %r", self.name, exc_info=True)
            return
        meter.account(name, max(t1 - self._t0, 0.0), energy, co2e)
        self._closed = closed
        if meter.sinks or self.on_result is not None:
            result = self.result
            if result is None:
                return
            meter.deliver(result)
            if self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception:
                    log.warning("meter: on_result callback failed", exc_info=True)

    def _want_sync(self, meter: WindowHost) -> bool:
        return meter.sync_cuda if self.sync_cuda is None else self.sync_cuda

    def __repr__(self) -> str:
        closed = self._result is not None or self._closed is not None
        state = "open" if self._started else ("closed" if closed else "new")
        return f"<Window {self.name!r} {state}>"

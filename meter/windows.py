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

import collections
import contextlib
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
    """A window boundary: the time, per device (ledger order) the joules the boundary read
    (None when no device was read: `energy_j` then derives them from the snapshots), the raw
    counter value of a counter not yet phase-locked (else None), and the published snapshot
    (whose carbon state prices the window)."""

    t: float
    read_j: tuple[float, ...] | None
    raw_j: tuple[float | None, ...]
    snapshots: tuple[Snapshot, ...]
    #: Keys of the devices whose figure was not read because a call was in progress (flagged).
    late: tuple[str, ...] = ()

    @property
    def energy_j(self) -> tuple[float, ...]:
        """Per device, the cumulative joules at ``t``."""
        if self.read_j is not None:
            return self.read_j
        t = self.t
        return tuple([s.energy_at(t) for s in self.snapshots])

    @property
    def carbon(self) -> tuple[CarbonState, ...]:
        return tuple(s.carbon for s in self.snapshots)


_NO_RAW: dict[int, tuple[None, ...]] = {}


def _no_raw(n: int) -> tuple[None, ...]:
    return _NO_RAW.get(n) or _NO_RAW.setdefault(n, (None,) * n)


def read_boundary(ledger: Ledger, read: bool) -> Boundary:
    """Every device at one instant: read where it pays and ``read``, else from the published
    state (`meter.ledger.Track.energy_now`)."""
    t = ledger.clock()
    tracks = ledger.tracks
    if not (read and ledger.reads_at_boundaries):
        # Nothing to read: the joules at ``t`` follow from the snapshots published by then
        # (`meter.ledger.Snapshot.energy_at`), worked out when the window is settled. This is
        # the whole cost of a boundary on the user's thread.
        return Boundary(t, None, _no_raw(len(tracks)), tuple([tr.snapshot() for tr in tracks]))
    energies = tuple([track.energy_now(t, read) for track in tracks])
    snapshots = tuple([track.snapshot() for track in tracks])
    late = tuple([track.info.key for track in tracks if track.late_at == t])
    raws: tuple[float | None, ...]
    if read and not all(s.steps is not None or not s.stepping for s in snapshots):
        raws = tuple([track.raw_for_retro(read) for track in tracks])
    else:  # every counter is locked (the usual case): nothing to redo at exit
        raws = _no_raw(len(tracks))
    return Boundary(t, energies, raws, snapshots, late)


def refine_start(ledger: Ledger, start: Boundary, read: bool) -> tuple[float, ...]:
    """A window's start joules improved at its exit, now that more is known: phase-locked
    counters are interpolated between the values published around the start (or, read before
    their lock existed, re-interpolated from that read); power devices that were not read at
    the start are interpolated between the samples around it instead of extrapolated."""
    past: tuple[float, ...] | None = None
    out = list(start.energy_j)
    raws = start.raw_j
    for i, track in enumerate(ledger.tracks):
        raw = raws[i] if i < len(raws) else None
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


def window_energies(
    ledger: Ledger, start: Boundary, end: Boundary, read: bool
) -> tuple[float, ...]:
    """Per device, the joules between two boundaries, the start refined (`refine_start`);
    never negative."""
    e0 = refine_start(ledger, start, read)
    return tuple([b - a if b > a else 0.0 for a, b in zip(e0, end.energy_j, strict=True)])


class WindowHost(Protocol):
    """What a window needs from its meter (`meter.Meter` is one)."""

    ledger: Ledger
    results: MeasurementBuilder
    sync_cuda: bool
    sinks: list[Callable[[Measurement], None]]
    settled_sinks: list[Callable[[Measurement], None]]
    started_at: float | None
    started_wall: float | None
    closed: bool
    deferred: collections.deque[Window]

    def start(self) -> Any: ...

    def synchronize(self) -> None: ...

    def group(self, name: str) -> Group: ...

    def account(self, name: str, seconds: float, energy_j: float, co2e_g: float) -> None: ...

    def deliver(self, m: Measurement) -> None: ...

    def settle_windows(self) -> None: ...


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
    late: tuple[str, ...] = ()

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
            snaps0=self.carbon0,
            snaps1=self.carbon1,
            late=self.late,
        )


def _wants(sink: Callable[[Measurement], None], name: str | None) -> bool:
    """Whether a sink takes a window of this name (a sink may say with ``wants(name)``, so a
    window it would drop is not built for it)."""
    wants = getattr(sink, "wants", None)
    return wants is None or bool(wants(name or "window"))


#: Settling windows (`Window.settle`): the sampler's thread and a reader may race for one.
_settling = threading.Lock()


#: Builds (or returns) the process default meter (set by `meter.core`, which owns it).
_default_host: Callable[[], WindowHost] | None = None
#: The process default meter once built (`publish_default`), else None.
_current: WindowHost | None = None

#: Closed windows a meter queues before the closing thread settles them itself, in one batch
#: (memory stays bounded at any rate of windows, and a tight loop of windows settles them
#: while they are still in the CPU's caches); the sampler settles the queue after each tick.
MAX_DEFERRED_WINDOWS = 16


def set_default_host(factory: Callable[[], WindowHost]) -> None:
    """Where windows without a ``meter=`` find theirs (`meter.core.get_meter`)."""
    global _default_host
    _default_host = factory


def publish_default(meter: WindowHost | None) -> None:
    """The process default meter changed (built, or replaced by `meter.set_meter`)."""
    global _current
    _current = meter


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
    """Measure a block or a function: context manager and decorator, sync and async; fresh
    state per use. ``meter.measure`` is this class; `meter.Meter.measure` makes one on that
    meter.

    >>> import meter
    >>> with meter.measure("epoch") as w:          # doctest: +SKIP
    ...     train_one_epoch()
    >>> w.result.energy_j, w.result.devices        # doctest: +SKIP

    >>> @meter.measure("step")                     # doctest: +SKIP
    ... def step(batch): ...

    Options: ``group="requests"`` makes it a shared window (fair split among the open windows
    of that group); ``sync_cuda=True`` synchronises CUDA at both boundaries so queued kernels
    are counted; ``read_devices=False`` never touches the hardware at the boundaries
    (extrapolates from the sampler); ``on_result=callable`` receives the `Measurement`;
    ``meter=`` uses another `Meter` than the process default.
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
        self._started = False
        self._live_meter: WindowHost | None = None  # the meter while open
        self._pending: WindowHost | None = None  # closed, not settled yet: its meter
        self._result: Measurement | None = None
        self._closed: _Closed | None = None
        self._totals: tuple[float, float | None] | None = None
        self._group: Group | None = None
        # A gross window's start: the Boundary where devices were read, else None and only
        # the time and snapshots (_t0/_c0), from which `Boundary.energy_j` follows; its end
        # likewise (_end, _t1/_c1, set at exit). A shared window's start: _t0/_c0 and its
        # group's integrals (_s0, _ts0). Slots written on every path before being read are
        # not set here: a window per training step, the less it touches, the less it costs.
        self._start: Boundary | None = None
        self._t0: float
        self._c0: tuple[Snapshot, ...]
        self._end: Boundary | None
        self._t1: float
        self._c1: tuple[Snapshot, ...]
        self._error: str | None
        self._s0: tuple[float, ...]
        self._ts0: float

    # Slots keep a window's state in one small object (no dict).
    __slots__ = (
        "__weakref__",
        "_c0",
        "_c1",
        "_closed",
        "_end",
        "_error",
        "_group",
        "_live_meter",
        "_meter",
        "_pending",
        "_result",
        "_s0",
        "_start",
        "_started",
        "_t0",
        "_t1",
        "_totals",
        "_ts0",
        "group",
        "name",
        "on_result",
        "read_devices",
        "sync_cuda",
    )

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

    async def __aenter__(self) -> Window:
        if not self._host_started():
            # The first window builds and starts the meter: opening the devices and waiting
            # for the counters' phase lock takes up to about half a second, which must not
            # stall the event loop (other requests, heartbeats). Off the loop, then.
            import asyncio  # here: importing asyncio costs 20 ms, and only async code needs it

            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not asyncio (trio, curio): start inline as a sync window
                pass
            else:
                await loop.run_in_executor(None, self._start_host)
        return self.__enter__()

    def _host_started(self) -> bool:
        host = self._meter if self._meter is not None else _current
        return host is not None and host.started_at is not None

    def _start_host(self) -> None:
        meter = self._host()  # bad configuration raises (into the await), as in __enter__
        with contextlib.suppress(Exception):  # start() below tries again and logs why
            meter.start()

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
        if _current is not None:
            return _current
        if _default_host is None:
            raise RuntimeError("meter.windows: no default meter; import meter first")
        return _default_host()  # may raise ConfigError: bad configuration fails fast

    @property
    def result(self) -> Measurement | None:
        """The window's `Measurement` once it closed (None while open, or if metering failed).
        Built on first use: closing a window only totals it, so a window nobody looks at costs
        no more than that."""
        if self._pending is not None:
            self.settle()
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

    def start(self) -> Window:
        """Open the window (returns it). Metering errors are logged, never raised into the
        user's code (bad configuration is the exception: it fails fast when the meter is
        built).

        A window per training step is the common case, and between two steps the CPU's
        caches hold the step's data, not this code: each function this path calls costs a few
        microseconds then. So it calls few, and a window whose devices need no read at a
        boundary notes only the time and the published snapshots."""
        if self._started:
            raise RuntimeError(
                "this window is already open; use a new meter.measure(...) for each block "
                "(a decorated function gets a fresh window per call)"
            )
        if self._pending is not None:
            self.settle()  # the previous use of this window object
        self._started = True
        if self._closed is not None or self._result is not None:
            self._result = self._closed = self._totals = None
        meter = self._meter
        if meter is None:
            meter = _current if _current is not None else self._host()
        try:
            if meter.started_at is None or meter.closed:
                meter.start()  # (a closed meter raises: the block runs unmetered)
            self._live_meter = meter
            sync = self.sync_cuda
            if sync or (sync is None and meter.sync_cuda):
                meter.synchronize()
            ledger = meter.ledger
            if self.group is not None:
                self._group = meter.group(self.group)
                self._c0 = ledger.snapshots()
                self._t0, self._s0, self._ts0 = self._group.enter(self.read_devices)
            elif self.read_devices and ledger.reads_at_boundaries:
                self._start = start = read_boundary(ledger, True)
                self._t0, self._c0 = start.t, start.snapshots
            else:
                self._start = None
                self._t0 = ledger.clock()
                self._c0 = ledger.published
        except Exception:
            log.warning(
                "meter: could not open window %r; the block runs unmetered",
                self.name,
                exc_info=True,
            )
            self._live_meter = None
        return self

    __enter__ = start

    def stop(self, exc_type: type[BaseException] | None = None) -> Measurement | None:
        """Close the window and return its `Measurement` (also in ``self.result``)."""
        self.__exit__(exc_type)
        return self.result

    def close(
        self, exc_type: type[BaseException] | None = None
    ) -> tuple[float, float | None] | None:
        """Close the window without building its `Measurement` (``result`` still builds it
        when asked): its `totals`, or None when it was not metered."""
        self.__exit__(exc_type)
        return self.totals

    @property
    def totals(self) -> tuple[float, float | None] | None:
        """(joules, location-based CO2e grams) of the closed window over its counted devices:
        what its `Measurement`'s ``energy_j`` and ``co2e_g`` are, without building it. CO2e is
        None without carbon accounting; the whole is None while open or when not metered."""
        if self._pending is not None:
            self.settle()
        return self._totals

    def settle(self) -> None:
        """Work out a closed window's joules and CO2e and add them to its meter's per-name
        totals. A window's exit only records its end boundary (what must happen then); the
        rest is done here, by the meter's sampler thread at its next tick or by the first
        reader of `totals`, `result` or the meter's ``window_stats``, whichever comes first.
        So a training step pays for its boundaries only. Idempotent; never raises."""
        if self._pending is None:
            return
        with _settling:
            meter = self._pending
            if meter is None:
                return
            self._pending = None
            try:
                n = len(self._c0)
                start = self._start or Boundary(self._t0, None, _no_raw(n), self._c0)
                end = self._end or Boundary(self._t1, None, _no_raw(n), self._c1)
                energies = window_energies(meter.ledger, start, end, self.read_devices)
                late = start.late + end.late if start.late or end.late else ()
                self._account(meter, end.t, energies, None, end.snapshots, self._error, late)
            except Exception:
                log.warning("meter: could not close window %r", self.name, exc_info=True)
                return
        settled = [s for s in meter.settled_sinks if _wants(s, self.name)]
        if settled:
            result = self.result
            if result is not None:
                for sink in settled:
                    try:
                        sink(result)
                    except Exception:
                        log.warning("meter: a settled-window sink failed", exc_info=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Close the window: read its end boundary; its totals go to the meter when it is
        settled (`settle`) and its `Measurement` is built when asked for (both at once when
        the meter has sinks or the window an ``on_result``, and for shared windows). An
        exception in the block propagates unchanged."""
        meter = self._live_meter
        self._started = False
        if meter is None:
            return
        self._live_meter = None
        error = exc_type.__name__ if exc_type is not None else None
        try:
            sync = self.sync_cuda
            if sync or (sync is None and meter.sync_cuda):
                meter.synchronize()
            ledger = meter.ledger
            if self._group is None:
                self._error = error
                if self._start is not None:  # read at the start: read at the end too
                    self._end = read_boundary(ledger, self.read_devices)
                else:
                    self._end = None
                    self._t1 = ledger.clock()
                    self._c1 = ledger.published
            else:
                t1, s1, ts1 = self._group.exit(self.read_devices)
                c1 = meter.ledger.snapshots()
                energies = tuple([b - a for a, b in zip(self._s0, s1, strict=True)])
                # A shared window counts its share of the busy time.
                self._account(meter, t1, energies, ts1 - self._ts0, c1, error)
        except Exception:
            log.warning("meter: could not close window %r", self.name, exc_info=True)
            return
        wanted = bool(meter.sinks) or self.on_result is not None
        if self._group is None:
            self._pending = meter
            if not wanted:
                # Settled later, off this thread where possible (`Meter.settle_windows`).
                deferred = meter.deferred
                deferred.append(self)
                if len(deferred) >= MAX_DEFERRED_WINDOWS:
                    meter.settle_windows()
                return
        if not wanted:
            return
        result = self.result  # settles the window first
        if result is None:
            return
        meter.deliver(result)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.warning("meter: on_result callback failed", exc_info=True)

    def _account(
        self,
        meter: WindowHost,
        t1: float,
        energies: tuple[float, ...],
        idle_time: float | None,
        c1: tuple[Snapshot, ...],
        error: str | None,
        late: tuple[str, ...] = (),
    ) -> None:
        """Total the closed window, add it to the meter's per-name totals, and keep what its
        `Measurement` is built from."""
        name = self.name or "window"
        builder = meter.results
        # Wall time of the start, from the meter's (a window does not read the wall clock).
        wall, mono = meter.started_wall, meter.started_at
        wall0 = wall + (self._t0 - mono) if wall is not None and mono is not None else time.time()
        energy, co2e = builder.totals(
            t0=self._t0,
            t1=t1,
            energies=energies,
            idle_time_s=idle_time,
            carbon0=self._c0,
            carbon1=c1,
        )
        self._closed = _Closed(
            builder,
            name,
            self._t0,
            t1,
            wall0,
            energies,
            idle_time,
            self.group,
            error,
            self._c0,
            c1,
            late,
        )
        self._totals = (energy, co2e)
        meter.account(name, max(t1 - self._t0, 0.0), energy, co2e or 0.0)

    def __repr__(self) -> str:
        closed = self._result is not None or self._closed is not None or self._pending is not None
        state = "open" if self._started else ("closed" if closed else "new")
        return f"<Window {self.name!r} {state}>"

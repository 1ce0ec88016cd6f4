"""The sampler: one background thread per meter that reads every device at a fixed interval.

It appends a `Sample` per tick to the ledger's bounded history, keeps slowly updating energy
counters phase-locked (calibration at start, a precise capture of one step every few seconds),
and survives devices that fail mid-run. It starts with the first window and stops at exit.

A device call can hang (a stuck driver; NVML has no timeout). A watchdog thread checks every
`WATCH_EVERY_S` for a call in progress longer than `meter.ledger.STALL_S`: it marks that device
unreadable from the call's start and, if the sampler's own thread is the one stuck, starts a
new sampler thread that goes on with the other devices (it skips the hung one: its lock is
held). The stuck thread ends when its call returns.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from meter.ledger import STALL_S, Ledger
from meter.stepclock import POLL_S

log = logging.getLogger("meter")

#: Longest time a calibration may poll (three steps of a 100 ms counter, with margin).
CALIBRATE_TIMEOUT_S = 0.5
#: Seconds between precise step captures of one counter (keeps the phase lock fresh).
CAPTURE_EVERY_S = 5.0
#: How far past the next tick the sampler may wait for a step to capture.
CAPTURE_SLACK_S = 0.01
#: Seconds between attempts to lock a counter that is not locked.
RECALIBRATE_EVERY_S = 5.0
#: How often the watchdog looks for a hung device call.
WATCH_EVERY_S = 0.25
#: Ticks are spread over +-12.5 % of the interval by the golden-ratio sequence. A sampler that
#: ticks at exactly the rate a driver publishes its power readings (every ~100 ms, like the
#: default 10 Hz) sees them at a slowly drifting phase, and its error on a window stays one-sided
#: for seconds: on the recorded A100 square wave, 1 s windows were off by 1.05 % (median) and
#: 3.2 % (p90) from what the driver published. Spread this way, the phases cover the driver's
#: period evenly within a few ticks (0.78 % and 2.2 %), deterministically and at the same mean
#: rate; counters are read at their own phase-locked times and are not affected
#: (BENCHMARKS.md, "Against an external power meter").
TICK_SPREAD = 0.25
_GOLDEN = 0.6180339887498949


def _stop_thread(event: threading.Event, threads: list[threading.Thread]) -> None:
    """Stop the sampler's threads and join them: the live sampler thread (not one left stuck
    in a hung call, which was replaced) and the watchdog, so none is still running when the
    interpreter exits."""
    event.set()
    for thread in threads:
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=STALL_S)


class Sampler:
    """Reads all devices of a `Ledger` every ``interval_s`` seconds on a daemon thread."""

    def __init__(
        self,
        ledger: Ledger,
        interval_s: float,
        *,
        wall_clock: Callable[[], float] = time.time,
        name: str = "meter-sampler",
        phase_lock: bool = True,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``sleep``: how to wait on the ledger's clock. None (real time): the thread waits on
        its stop event and polls with `time.sleep`. A callable that advances an injected clock
        (``FakeClock.sleep``) makes `run_once` run the whole loop body on that clock, so a
        test or a replay drives the sampler without a thread and without real waits."""
        self.ledger = ledger
        self.interval_s = interval_s
        self.wall_clock = wall_clock
        self.name = name
        self.phase_lock = phase_lock
        self.ticks = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._sleep: Callable[[float], None] = time.sleep if sleep is None else sleep
        self._wait: Callable[[float], bool] = (
            self._stop.wait if sleep is None else _waiting_on(sleep)
        )
        self._next_recal: float | None = None
        self._next_tick: float | None = None
        self._grid_start = 0.0  # ticks are at grid_start + interval x (k + spread(k))
        self._k = 0
        self._rr = 0
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []  # [the live sampler thread, the watchdog]
        self._generation = 0  # bumped when a stuck thread is replaced
        #: Sampler threads replaced because a device call hung in them.
        self.replaced_threads = 0
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        self._ready = threading.Event()
        #: Cheap callables run after every tick (e.g. the carbon accountant's refresh check).
        self.on_tick: list[Callable[[], None]] = []
        #: Callables run at the end of each pass, after the tick and any counter capture
        #: (work that must not delay either: settling closed windows).
        self.after_tick: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            thread = self._sampler_thread()
            watchdog = threading.Thread(
                target=self._watch, name=f"{self.name}-watchdog", daemon=True
            )
            self._thread = thread
            self._threads[:] = [thread, watchdog]
            thread.start()
            watchdog.start()
            self._finalizer = weakref.finalize(self, _stop_thread, self._stop, self._threads)

    def stop(self) -> None:
        """Stop and join the thread (idempotent)."""
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()
        else:
            self._stop.set()  # (a thread started by the watchdog alone, in tests)

    @property
    def next_tick_s(self) -> float | None:
        """Clock time of the next tick (None before the first)."""
        return self._next_tick

    def wait_ready(self, timeout_s: float = 2.0) -> bool:
        """Block until the first tick and the counters' calibration are done."""
        return self._ready.wait(timeout_s)

    # -- the thread --------------------------------------------------------------------------

    def tick(self) -> None:
        """Read every device once and record a sample."""
        clock = self.ledger.clock
        generation = self._generation
        for track in self.ledger.tracks:
            delay = track.read_delay_s(clock())  # a few ms at most, near a counter's step
            if delay > 0:
                self._sleep(delay)
            track.observe()
            if self._generation != generation:
                return  # this thread was stuck in that call and has been replaced
        self.ledger.record(self.ledger.clock(), self.wall_clock())
        self.ticks += 1
        for callback in self.on_tick:
            callback()

    def _calibrate(self) -> None:
        pending = [t for t in self.ledger.tracks if t.needs_calibration()]
        if not pending:
            return
        for track in pending:
            track.calibrate_start()
        clock = self.ledger.clock
        deadline = clock() + CALIBRATE_TIMEOUT_S
        while pending and clock() < deadline and not self._stop.is_set():
            pending = [t for t in pending if not t.calibrate_poll()]
            self._sleep(POLL_S)
        for track in self.ledger.tracks:
            track.calibrate_finish()

    def run_once(self) -> float:
        """One pass of the sampler's loop on the ledger's clock: recalibrate the counters when
        due, tick, and perhaps capture one counter step; returns the clock time of the next
        tick. The thread calls it in a loop; with an injected ``sleep`` a caller can too."""
        clock = self.ledger.clock
        generation = self._generation
        if self._next_tick is None:
            self._next_tick = self._next_recal = self._grid_start = clock()
            self._k = 0
        try:
            now = clock()
            if self.phase_lock and now >= (self._next_recal or 0.0):
                self._calibrate()
                self._next_recal = clock() + RECALIBRATE_EVERY_S
            self.tick()
            if self._generation != generation:
                return clock()  # replaced while stuck in a device call: stop here
            self._ready.set()
            tracks = self.ledger.tracks
            if self.phase_lock and tracks:
                # One precise capture per tick at most, round-robin, and only when the
                # predicted step falls before the next tick (so ticks are not delayed).
                now = clock()
                for i in range(len(tracks)):
                    track = tracks[(self._rr + i) % len(tracks)]
                    due = track.capture_due(now, CAPTURE_EVERY_S)
                    # Wait at most about one tick past the next: at high rates the ticks
                    # can stay in phase with the counter and never fall just before a step.
                    if due is not None and due - now < self.interval_s + CAPTURE_SLACK_S:
                        track.capture(self._wait, self._sleep)
                        self._rr = (self._rr + i + 1) % len(tracks)
                        break
            for callback in self.after_tick:
                callback()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("meter: sampler tick failed; continuing")
        self._k += 1
        self._next_tick = self._grid_start + self.interval_s * (self._k + tick_offset(self._k))
        now = clock()
        if self._next_tick < now:  # fell behind (suspended process): skip, do not burst
            self._grid_start, self._k = now, 0
            self._next_tick = now + self.interval_s
        return self._next_tick

    def _run(self, generation: int) -> None:
        clock = self.ledger.clock
        while self._generation == generation:
            next_tick = self.run_once()
            if self._generation != generation:
                break  # replaced while stuck in a device call: the new thread goes on
            if self._stop.wait(max(next_tick - clock(), 0.0)):
                break

    def check_stalls(self) -> list[str]:
        """Look for device calls in progress for longer than `meter.ledger.STALL_S`: mark
        those devices unreadable, and replace the sampler's thread if it is the one stuck.
        Returns the keys newly marked. The watchdog thread calls it; tests can too."""
        now = self.ledger.clock()
        stuck: list[str] = []
        for track in self.ledger.tracks:
            since = track.busy_since
            if since is None or now - since < STALL_S:
                continue
            if track.mark_stalled(since):
                stuck.append(track.info.key)
            thread = self._thread
            if (
                thread is not None
                and track.busy_thread == thread.ident
                and track.busy_since == since
                and not self._stop.is_set()
            ):
                self._replace(thread)
        return stuck

    def _sampler_thread(self) -> threading.Thread:
        """A (not started) sampler thread of the current generation."""
        return threading.Thread(
            target=self._run, args=(self._generation,), name=self.name, daemon=True
        )

    def _replace(self, stuck: threading.Thread) -> None:
        with self._lock:
            if self._thread is not stuck or self._stop.is_set():
                return
            self._generation += 1
            self.replaced_threads += 1
            thread = self._sampler_thread()
            self._thread = thread
            self._threads[:1] = [thread]
            thread.start()
        log.warning(
            "meter: the sampler's thread is stuck in a device call; a new one goes on with the "
            "other devices (the stuck one ends when its call returns)."
        )

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_EVERY_S):
            try:
                self.check_stalls()
            except Exception:  # never let the watchdog die
                log.exception("meter: watchdog check failed; continuing")


def tick_offset(k: int) -> float:
    """Where tick ``k`` falls in its slot, in intervals: evenly spread over +-TICK_SPREAD/2 by
    the golden-ratio sequence (a low-discrepancy sequence: any run of ticks covers the range
    about evenly, and deterministically)."""
    return TICK_SPREAD * ((k * _GOLDEN) % 1.0 - 0.5)


def _waiting_on(sleep: Callable[[float], None]) -> Callable[[float], bool]:
    """A stop-aware wait built on an injected sleep: it sleeps and is never stopped early."""

    def wait(seconds: float) -> bool:
        if seconds > 0:
            sleep(seconds)
        return False

    return wait

"""The sampler: one background thread per meter that reads every device at a fixed interval.

It appends a `Sample` per tick to the ledger's bounded history, keeps slowly updating energy
counters phase-locked (calibration at start, a precise capture of one step every few seconds),
and survives devices that fail mid-run. It starts with the first window and stops at exit.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from meter.ledger import Ledger
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


def _stop_thread(event: threading.Event, thread: threading.Thread) -> None:
    event.set()
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=5.0)


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
    ) -> None:
        self.ledger = ledger
        self.interval_s = interval_s
        self.wall_clock = wall_clock
        self.name = name
        self.phase_lock = phase_lock
        self.ticks = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        self._ready = threading.Event()
        #: Cheap callables run after every tick (e.g. the carbon accountant's refresh check).
        self.on_tick: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread = thread
            thread.start()
            self._finalizer = weakref.finalize(self, _stop_thread, self._stop, thread)

    def stop(self) -> None:
        """Stop and join the thread (idempotent)."""
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()

    def wait_ready(self, timeout_s: float = 2.0) -> bool:
        """Block until the first tick and the counters' calibration are done."""
        return self._ready.wait(timeout_s)

    # -- the thread --------------------------------------------------------------------------

    def tick(self) -> None:
        """Read every device once and record a sample."""
        for track in self.ledger.tracks:
            track.observe()
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
            time.sleep(POLL_S)
        for track in self.ledger.tracks:
            if hasattr(track, "_cal"):
                track.calibrate_finish()
                del track._cal

    def _run(self) -> None:
        clock = self.ledger.clock
        next_recal = clock()
        rr = 0
        next_tick = clock()
        while True:
            try:
                now = clock()
                if self.phase_lock and now >= next_recal:
                    self._calibrate()
                    next_recal = clock() + RECALIBRATE_EVERY_S
                self.tick()
                self._ready.set()
                tracks = self.ledger.tracks
                if self.phase_lock and tracks:
                    # One precise capture per tick at most, round-robin, and only when the
                    # predicted step falls before the next tick (so ticks are not delayed).
                    now = clock()
                    for i in range(len(tracks)):
                        track = tracks[(rr + i) % len(tracks)]
                        due = track.capture_due(now, CAPTURE_EVERY_S)
                        # Wait at most about one tick past the next: at high rates the ticks
                        # can stay in phase with the counter and never fall just before a step.
                        if due is not None and due - now < self.interval_s + CAPTURE_SLACK_S:
                            track.capture(self._stop)
                            rr = (rr + i + 1) % len(tracks)
                            break
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("meter: sampler tick failed; continuing")
            next_tick += self.interval_s
            now = clock()
            if next_tick < now:  # fell behind (suspended process): skip, do not burst
                next_tick = now + self.interval_s
            if self._stop.wait(next_tick - now):
                break

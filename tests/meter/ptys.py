"""A pseudo-terminal's master side, drained in the background (so a writer never blocks)."""

from __future__ import annotations

import os
import threading


class Drained:
    """Reads the master side of a pseudo-terminal into ``output`` until no process holds the
    terminal open. Subclasses open the pair and call `start_draining` with the master."""

    master: int

    def start_draining(self, master: int) -> None:
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._drain, name="pty-drain", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO once no process holds the terminal open
                return
            if not chunk:
                return
            self.output += chunk

    def join(self, timeout: float = 5.0) -> None:
        self._reader.join(timeout=timeout)

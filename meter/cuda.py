"""CUDA synchronisation at window boundaries, only when torch is already in use."""

from __future__ import annotations

import sys


def synchronize() -> bool:
    """Wait for queued CUDA work, so kernels are counted in the window that launched them.

    Does nothing (and imports nothing) unless torch is already imported and CUDA initialised:
    metering never initialises CUDA for the user. Returns whether it synchronised.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            return True
    except Exception:
        return False
    return False

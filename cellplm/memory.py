"""Peak memory of the process: resident memory and the GPU memory torch allocated.

Standard library only at import: torch is consulted only when the process has already imported it, so measuring a
method that never uses torch neither loads torch nor counts its memory.
"""

from __future__ import annotations

import resource
import sys


STATUS = "/proc/self/status"  # Linux: VmHWM, the peak resident set, which clear_refs can reset
CLEAR_REFS = "/proc/self/clear_refs"


def peak_rss_mb() -> float:
    """The process's peak resident memory since the start or :func:`reset_peak_rss`, in MiB: Linux's VmHWM, else
    ``ru_maxrss`` (kB on Linux; never reset)."""
    try:
        with open(STATUS) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start a new peak for :func:`peak_rss_mb` (Linux: ``5`` to clear_refs resets VmHWM to the current resident
    set; elsewhere nothing happens and the peak stays the process's), so that each run of a process that runs
    several records its own peak."""
    try:
        with open(CLEAR_REFS, "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _cuda():
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None


def reset_peak_gpu_memory() -> None:
    """Start a new peak for :func:`peak_gpu_mb` (nothing to do without torch or a visible GPU)."""
    if (cuda := _cuda()) is not None:
        cuda.reset_peak_memory_stats()


def peak_gpu_mb() -> float | None:
    """Peak GPU memory torch allocated (since the start or :func:`reset_peak_gpu_memory`), in MiB; None when torch
    is not imported or sees no GPU."""
    if (cuda := _cuda()) is None:
        return None
    return cuda.max_memory_allocated() / 2**20

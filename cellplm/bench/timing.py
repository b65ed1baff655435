"""Timing and peak-memory helpers shared by the benchmark scripts (benchmarks/) and usable by any caller.

``timed``/``timed_cpu`` time one call with CUDA work synchronised on both sides; :class:`PeakMemory` measures the
peak memory of a block (GPU peak allocated on CUDA, sampled peak RSS increase on the CPU); :func:`child_peak_rss`
is the peak resident set size of a finished child process as the kernel reports it to ``os.wait4``.
"""

from __future__ import annotations

import os
import threading
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(wall seconds, result); CUDA work is synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def timed_cpu(fn, device: torch.device):
    """(wall seconds, process CPU seconds summed over all threads, result)."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def release_freed_memory() -> None:
    """Return freed heap to the OS (glibc malloc_trim) so that RSS deltas of the next phase start clean."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def current_rss() -> int:
    """Resident set size of this process in bytes (psutil if installed, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # lifetime peak: coarse fallback


class PeakMemory:
    """Peak memory while the block runs: GPU peak allocated (CUDA) or peak RSS above the RSS at entry (CPU).

    The RSS is sampled every 2 ms by a thread, so only the untimed warm-up calls are measured with it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = float("nan")
        self.kind = "GPU peak allocated (torch)" if device.type == "cuda" else "peak RSS increase (sampled)"

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            release_freed_memory()
            self._base = current_rss()
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, current_rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, current_rss())
            self.peak_bytes = self._peak - self._base
        return False


def child_peak_rss(pid: int) -> tuple[int, int]:
    """Wait for child ``pid``: (exit code, peak RSS in bytes of that child alone; Linux reports ru_maxrss in KiB)."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024

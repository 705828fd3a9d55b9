"""Benchmarks: training step speed, memory and decoding speed, each against a baseline measured
in the same run. Entry point: `python -m benchmarks.run [--quick] [--smoke] [--out PATH]`.

This file holds the few measurement helpers every case uses (no JAX or torch import here).
Each case runs in its own subprocess, so a process's peak resident memory is that case's.
"""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

# True when every case runs in one process (--smoke): cases then keep loaded weights cached.
SHARED_PROCESS = False


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux VmHWM) to its current RSS, so the peak measured
    afterwards is the benchmarked work's, not model loading's. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Current resident set size in MiB (0.0 where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size in MiB since the last `reset_peak_rss` (or process start)."""
    kb = _status_kb("VmHWM")
    if kb is None:  # no /proc: the lifetime peak
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


def timed(fn: Callable[[], object], reps: int) -> tuple[float, list[float]]:
    """(median seconds, all seconds) of `reps` calls of fn (fn must block until done)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times

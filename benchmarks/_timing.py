"""Timing shared by the benchmarks."""

from __future__ import annotations

import compileall
import os
import statistics
import sys
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compile_sources() -> bool:
    """Byte-compile FlowForge and the benchmarks, as pip does for what it installs, so no
    interpreter a benchmark starts (process workers, timed scripts) compiles them from
    source. Where bytecode caching is off (``PYTHONDONTWRITEBYTECODE``, set on some
    machines) each one would, at about 14 ms a process worker, a cost no other row pays:
    their libraries came compiled. Returns whether caching was off."""
    import flowforge

    for package in (flowforge.__file__, __file__):
        compileall.compile_dir(os.path.dirname(package), quiet=1)
    return sys.dont_write_bytecode

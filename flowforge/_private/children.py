"""Ending the child processes of cancelled attempts (``flowforge cancel --force``).

A process worker's descendants are its attempt's: they end with it. An attempt that runs
in the driver (sequential, thread executors) has no process of its own, so its children
are told apart by age: the driver's descendants started since the run began, less the
machinery of process pools (fork servers, resource trackers), which later runs reuse.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["end_descendants", "end_run_children"]

_MACHINERY = ("multiprocessing.forkserver", "multiprocessing.resource_tracker",
              "loky.backend", "joblib.externals.loky")


def end_descendants(pid: int) -> int:
    """SIGKILL every descendant of process ``pid`` (not ``pid`` itself); how many."""
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    return _kill(procs)


def end_run_children(driver: int, since: float, spare: Iterable[int] = ()) -> int:
    """SIGKILL the descendants of ``driver`` started at ``since`` (a wall-clock time) or
    later, other than the ``spare`` pids and their descendants and pool machinery."""
    import psutil

    try:
        procs = psutil.Process(driver).children(recursive=True)
    except psutil.Error:
        return 0
    spared = set(spare)
    for pid in list(spared):
        with contextlib.suppress(psutil.Error):
            spared.update(p.pid for p in psutil.Process(pid).children(recursive=True))
    chosen = []
    for proc in procs:
        try:
            if proc.pid in spared or proc.create_time() < since - 1.0:
                continue
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if any(m in cmdline for m in _MACHINERY):
            spared.update(p.pid for p in _children(proc))
            continue
        chosen.append(proc)
    return _kill([p for p in chosen if p.pid not in spared])


def _children(proc: psutil.Process) -> list[psutil.Process]:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _kill(procs: list[psutil.Process]) -> int:
    import psutil

    killed = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
            killed += 1
    return killed

"""Memory enforcement on the process executor: watch each attempt that asked for memory,
and kill its worker when it goes over.

A daemon thread samples, every ``INTERVAL`` seconds, the resident memory (RSS) of each
watched worker and its child processes (psutil). An attempt over its request by more
than the margin, ``max(10% of the request, 16 MiB)``, has its worker killed; the engine
then fails the attempt with :class:`~flowforge.errors.MemoryLimitExceeded`, naming the
task, the limit and the peak seen. The margin absorbs the interpreter and the sampling
jitter; the interval means a fast allocation can overshoot for up to that long.

Threads cannot be measured apart, so the sequential and thread executors admit by
memory requests but do not enforce them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["INTERVAL", "MemoryWatch", "margin"]

INTERVAL = 0.05


def margin(limit: int) -> int:
    return max(limit // 10, 16 * 2**20)


class MemoryWatch:
    """Watches attempts' workers; ``exceeded`` maps a killed attempt's future to its
    (limit, peak) so the engine can report it."""

    def __init__(self) -> None:
        self.exceeded: dict[Future[Any], tuple[int, int]] = {}
        self._watched: dict[
            Future[Any], tuple[Callable[[], int | None], int, Callable[[], Any]]
        ] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def watch(
        self, future: Future[Any], pid: Callable[[], int | None], limit: int,
        kill: Callable[[], Any],
    ) -> None:
        """Watch ``future``'s worker; ``pid()`` names it (None while the attempt still
        waits for a worker, as a retry may just after its worker was killed)."""
        with self._lock:
            self._watched[future] = (pid, limit, kill)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flowforge-memory-watch", daemon=True
                )
                self._thread.start()
        future.add_done_callback(self._forget)

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._watched.pop(future, None)

    def _run(self) -> None:
        import psutil

        peaks: dict[Future[Any], int] = {}
        while not self._stop:
            with self._lock:
                watched = list(self._watched.items())
            for future, (pid_of, limit, kill) in watched:
                pid = pid_of()
                if pid is None:
                    continue
                try:
                    proc = psutil.Process(pid)
                    rss = proc.memory_info().rss + sum(
                        c.memory_info().rss for c in proc.children(recursive=True)
                    )
                except psutil.Error:
                    continue
                peak = peaks[future] = max(peaks.get(future, 0), rss)
                if rss > limit + margin(limit) and future not in self.exceeded:
                    self.exceeded[future] = (limit, peak)
                    kill()
            self._wake.wait(INTERVAL)

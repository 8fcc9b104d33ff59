"""The thread executor: a pool of daemon threads.

Unlike ``concurrent.futures.ThreadPoolExecutor`` its threads are daemons and can be
abandoned: an attempt that timed out or was cancelled keeps its thread until the function
returns (Python cannot kill a thread), a fresh thread takes its place in the pool, and
the interpreter does not wait for it at exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .base import Executor, default_workers

__all__ = ["ThreadExecutor"]

_STOP = None


class ThreadExecutor(Executor):
    """Runs work on up to ``max_workers`` daemon threads (default: the CPU count)."""

    name = "thread"

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is None:
            max_workers = default_workers()
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            msg = f"ThreadExecutor(max_workers=...) must be a positive integer, got {max_workers!r}"
            raise ValueError(msg)
        self.max_workers = max_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._waiting = 0  # threads blocked in queue.get(), ready for work
        self._running: dict[Future[Any], threading.Thread] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        with self._lock:
            self._spawn_if_needed()
        return future

    def may_run_here(self, alone: bool) -> bool:
        """Only for a lone attempt (a chain): handing it to a pool thread and waiting for
        the answer would cost two thread switches and buy no parallelism."""
        return alone

    def submit_timed(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.submit(fn, *args, **kwargs)

    def cancel_running(self, future: Future[Any]) -> bool:
        """Abandon the thread running ``future`` and start a replacement; False."""
        if future.cancel():
            return True
        with self._lock:
            thread = self._running.pop(future, None)
            if thread is not None and thread in self._threads:
                self._threads.discard(thread)
                thread.abandoned = True  # type: ignore[attr-defined]
                self._spawn_if_needed()
        return False

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
        for _ in threads:
            self._queue.put(_STOP)
        if wait:
            for t in threads:
                t.join()
        self._queue = queue.SimpleQueue()

    def _spawn_if_needed(self) -> None:
        """Start a thread when queued work outnumbers waiting threads (lock held)."""
        if self._queue.qsize() > self._waiting and len(self._threads) < self.max_workers:
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._work, name="flowforge-thread", daemon=True)
        t.abandoned = False  # type: ignore[attr-defined]
        self._threads.add(t)
        t.start()

    def _work(self) -> None:
        me = threading.current_thread()
        jobs = self._queue
        while True:
            with self._lock:
                self._waiting += 1
            item = jobs.get()
            with self._lock:
                self._waiting -= 1
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running[future] = me
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                self._running.pop(future, None)
                if me.abandoned:  # type: ignore[attr-defined]
                    return

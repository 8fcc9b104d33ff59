"""The engine's waiting: for a finished attempt, a timeout, a retry that is due, or the
run's deadline, whichever comes first, read against the injected clock.

A mixin of :class:`~flowforge._engine.Engine`; see "Data structures" in the engine's
design essay for ``inbox``, ``deadlines`` and ``delayed``.
"""

from __future__ import annotations

import heapq
import queue
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .errors import TaskTimeoutError

if TYPE_CHECKING:
    from ._binding import Binding
    from .clock import Clock
    from .executors.base import Executor

__all__ = ["Waiting"]


class Waiting:
    """Waiting and deadlines (mixed into :class:`Engine`)."""

    _clock: Clock
    _inbox: queue.SimpleQueue[Future[Any]]
    _deadlines: list[tuple[float, int, Future[Any]]]
    _delayed: list[tuple[float, int, str | tuple[str, int]]]
    _running: dict[Future[Any], Any]
    _inflight: dict[Executor, int]
    _bindings: dict[str, Binding] | Any
    _ready: Any
    _run_deadline: float | None
    _token_due: float | None
    _stopping: bool
    _timed_out: bool
    _timeout: float | None

    if TYPE_CHECKING:
        def _collect(self, future: Future[Any]) -> None: ...
        def _attempt_failed(self, attempt: Any, error: BaseException,
                            duration: float) -> None: ...
        def _cancel_all(self, reason: str) -> None: ...

    def _wait(self) -> None:
        clock = self._clock
        deadline = self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - clock.monotonic())
        inbox = self._inbox
        try:
            if timeout == 0.0:
                future = inbox.get_nowait()
            else:
                future = inbox.get(timeout=clock.blocking_timeout(timeout))
        except queue.Empty:
            pass
        else:
            self._collect(future)
            while True:
                try:
                    future = inbox.get_nowait()
                except queue.Empty:
                    break
                self._collect(future)
        if deadline is not None:
            self._on_clock(clock.monotonic())

    def _sleep_until_due(self) -> None:
        clock = self._clock
        deadline = self._next_deadline()
        assert deadline is not None
        clock.sleep(deadline - clock.monotonic())
        self._on_clock(clock.monotonic())

    def _next_deadline(self) -> float | None:
        candidates = []
        if self._deadlines:
            candidates.append(self._deadlines[0][0])
        if self._delayed and not self._stopping:
            candidates.append(self._delayed[0][0])
        if self._run_deadline is not None:
            candidates.append(self._run_deadline)
        if self._token_due is not None and not self._stopping:
            candidates.append(self._token_due)
        return min(candidates) if candidates else None

    def _on_clock(self, now: float) -> None:
        """Expire attempt timeouts, release retries that are due, enforce the run's timeout."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, future = heapq.heappop(self._deadlines)
            attempt = self._running.pop(future, None)
            if attempt is None:
                continue
            self._inflight[attempt.executor] -= 1
            killed = attempt.executor.cancel_running(future)
            timeout = self._bindings[attempt.name].task.timeout
            how = (
                "its worker process was killed"
                if killed
                else "it cannot be interrupted where it runs (a thread, or a Dask task), so "
                "it was abandoned"
            )
            error = TaskTimeoutError(
                f"task {attempt.name!r} attempt {attempt.number} timed out after {timeout}s "
                f"({how}); raise timeout= or make the task faster",
                task=attempt.name,
                timeout=timeout,
            )
            self._attempt_failed(attempt, error, time.perf_counter() - attempt.started)
        while self._delayed and self._delayed[0][0] <= now and not self._stopping:
            _, _, name = heapq.heappop(self._delayed)
            self._ready.append(name)
        if self._run_deadline is not None and now >= self._run_deadline:
            self._timed_out = True
            self._cancel_all(f"the workflow timeout of {self._timeout}s passed")


"""Helpers for testing your own workflows: a recording listener, a fake clock, and a
one-call runner that keeps everything in-process and quiet."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._workflow import Workflow
from .events import Event, TaskEvent
from .result import RunResult

__all__ = ["FakeClock", "RecordingListener", "run_in_process"]

E = TypeVar("E", bound=Event)


class RecordingListener:
    """Keeps every event a workflow publishes, in order.

    >>> rec = RecordingListener.attach_to(wf)
    >>> wf.run(); rec.names()
    ['WorkflowStarted', 'TaskStarted', ...]
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._detach: Callable[[], None] | None = None

    @classmethod
    def attach_to(cls, wf: Workflow) -> RecordingListener:
        rec = cls()
        rec._detach = wf.events.subscribe(Event, rec)
        return rec

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def detach(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None

    def of_type(self, event_type: type[E]) -> list[E]:
        """The recorded events of ``event_type`` (or its subclasses)."""
        return [e for e in self.events if isinstance(e, event_type)]

    def names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def for_task(self, task: str) -> list[TaskEvent]:
        return [e for e in self.events if isinstance(e, TaskEvent) and e.task == task]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


class FakeClock:
    """A clock that only moves when told: ``sleep`` jumps it forward at once.

    Pass it as ``workflow(..., clock=FakeClock())``: retry delays then cost no real time
    and are recorded in ``sleeps``. A test (or a task) calls ``advance(seconds)`` to push
    a running attempt past its timeout; the engine polls a fake clock every ``poll``
    seconds of real time to notice.
    """

    def __init__(self, start: float = 0.0, *, poll: float = 0.005) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.poll = poll
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            msg = f"FakeClock.advance() cannot go backwards ({seconds})"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds

    def blocking_timeout(self, seconds: float | None) -> float | None:
        return self.poll if seconds is not None else None

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


def run_in_process(
    wf: Workflow, params: Mapping[str, Any] | None = None, **overrides: Any
) -> RunResult:
    """Run ``wf`` on the sequential executor with no log file, no console output, no
    progress line and no saved state; ``overrides`` may replace ``executor``."""
    saved = (wf.log_dir, wf.quiet, wf.progress, wf.autosave)
    wf.log_dir, wf.quiet, wf.progress, wf.autosave = None, True, False, False
    try:
        return wf.run(params, executor=overrides.pop("executor", "sequential"), **overrides)
    finally:
        wf.log_dir, wf.quiet, wf.progress, wf.autosave = saved

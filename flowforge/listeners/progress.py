"""A one-line progress display (done/total, running, failed) for interactive terminals."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from ..bus import EventBus
from ..events import (
    Event,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskSkipped,
    TaskStarted,
    TaskSucceeded,
    WorkflowFinished,
    WorkflowStarted,
)

__all__ = ["ProgressListener"]

_WIDTH = 24


class ProgressListener:
    """Redraws a status line at most ten times a second; clears it when the run ends.

    Counts the workflow's own tasks: events of one map item or loop iteration (``index``
    set) and of a subflow's inner tasks (names outside ``tasks``) do not move the bar."""

    def __init__(
        self,
        total: int,
        console: Any,
        *,
        min_interval: float = 0.1,
        tasks: Collection[str] | None = None,
    ) -> None:
        self.total = total
        self.tasks = None if tasks is None else frozenset(tasks)
        self.console = console
        self.min_interval = min_interval
        self.done = self.running = self.failed = 0
        self._workflow = ""
        self._last = 0.0

    def attach(self, bus: EventBus) -> Callable[[], None]:
        return bus.subscribe(Event, self.handle)

    def handle(self, event: Event) -> None:
        if isinstance(event, TaskEvent) and (
            event.index is not None or (self.tasks is not None and event.task not in self.tasks)
        ):
            return
        if isinstance(event, WorkflowStarted):
            self._workflow = event.workflow
            self.total = event.total_tasks
            self.done += event.restored
        elif isinstance(event, TaskStarted):
            self.running += 1
        elif isinstance(event, TaskSucceeded):
            self.running -= 1
            self.done += 1
        elif isinstance(event, TaskFailed):
            self.running -= 1
            if not event.will_retry:
                self.failed += 1
                self.done += 1
        elif isinstance(event, TaskCancelled):
            self.running -= 1
        elif isinstance(event, TaskSkipped):
            self.done += 1
        elif isinstance(event, WorkflowFinished):
            self.console.status("")
            return
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            self.console.status(self.render())

    def render(self) -> str:
        filled = int(_WIDTH * self.done / self.total) if self.total else _WIDTH
        bar = "#" * filled + "-" * (_WIDTH - filled)
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"[{self._workflow}] [{bar}] {self.done}/{self.total} done, "
            f"{self.running} running{failed}"
        )

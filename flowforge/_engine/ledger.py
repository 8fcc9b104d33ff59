"""Ending tasks: a task's final state, its save, its event, and what it makes ready.

The loop decides *that* a task ends and how (succeeded, failed for good, skipped,
cancelled); the :class:`Ledger` carries it out in the one order that keeps the promises
of the run: the state moves (through :func:`~.lifecycle.move`), the outcome is saved by
the :class:`~.recorder.Recorder`, and only then is the event published, so a task
reported finished is on disk; last, the tasks downstream that now have every input are
queued. It never stops the run: a failure under ``fail_fast`` is the loop's call.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .._binding import call_hook
from ..events import TaskCancelled, TaskFailed, TaskSkipped, TaskStarted, TaskSucceeded
from ..states import TaskState
from .lifecycle import move

if TYPE_CHECKING:
    from ..dag import ReadySet
    from ..result import TaskRun
    from .fanout import FanOut
    from .gate import Gate
    from .recorder import Recorder
    from .spec import RunSpec

__all__ = ["Ledger"]

_RUNNING = TaskState.RUNNING
_PENDING = TaskState.PENDING
_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED


class Ledger:
    """Ends the tasks of one run and publishes its events (see the module docstring)."""

    def __init__(
        self, spec: RunSpec, tasks: dict[str, TaskRun], results: dict[str, Any],
        ready: deque[Any], ready_set: ReadySet, gate: Gate, recorder: Recorder,
        fanout: FanOut,
    ) -> None:
        self.tasks = tasks
        self._workflow, self._run_id, self._bus = spec.workflow, spec.run_id, spec.bus
        self._bindings = spec.bindings
        self._results = results
        self._ready = ready
        self._ready_set = ready_set
        self._gate = gate
        self._recorder = recorder
        self._fans = fanout.fans
        # Events nobody listens to are not even built: these run for every task.
        self.emit_started = spec.bus.wants(TaskStarted)
        self.emit_succeeded = spec.bus.wants(TaskSucceeded)
        self.emit_failed = spec.bus.wants(TaskFailed)

    def publish(self, event_type: type[Any], **fields: Any) -> Any:
        """Publish one event of this run; returns it."""
        event = event_type(
            workflow=self._workflow, run_id=self._run_id, timestamp=time.time(), **fields
        )
        self._bus.publish(event)
        return event

    def succeeded(self, name: str, value: Any, duration: float) -> None:
        rec = self.tasks[name]
        move(rec, _SUCCEEDED)
        rec.duration = duration
        self._results[name] = value
        if self._recorder.session is not None:
            fan = self._fans.get(name)
            self._recorder.succeeded(rec, value, mapped=fan is not None and fan.mapped)
        if self.emit_succeeded:
            self.publish(TaskSucceeded, task=name, attempt=rec.attempts, duration=duration)
        rs = self._ready_set
        rs.done(name)
        self._ready.extend(rs.get_ready())

    def failed(
        self, name: str, error: BaseException, duration: float, event: Any = None
    ) -> bool:
        """``name`` failed for good (``event``: its TaskFailed, if published already).
        Returns whether the run tolerates it (``on_error="continue"`` on the task)."""
        rec = self.tasks[name]
        task = self._bindings[name].task
        rec.duration = duration
        if event is None and (self.emit_failed or task.on_failure is not None):
            event = self.publish(TaskFailed, task=name, attempt=rec.attempts + (
                                     rec.state is _PENDING),  # failed before it started
                                 duration=duration, error=error, will_retry=False)
        move(rec, _FAILED, error=error)
        rec.tolerated = task.on_error == "continue"
        self._recorder.ended(rec)
        if task.on_failure is not None:
            call_hook(task.on_failure, event, f"on_failure of task {name!r}")
        return rec.tolerated

    def skipped(self, name: str, reason: str) -> None:
        rec = self.tasks[name]
        move(rec, TaskState.SKIPPED)
        rec.reason = reason
        self._recorder.ended(rec)
        self.publish(TaskSkipped, task=name, attempt=rec.attempts, reason=reason)
        self.ended_without_result(name)

    def cancelled(self, name: str, reason: str) -> None:
        """Cancel ``name`` if it runs (one that never started: see cancel_leftovers)."""
        rec = self.tasks[name]
        if rec.state is _RUNNING:
            move(rec, TaskState.CANCELLED)
            rec.reason = reason
            self._recorder.ended(rec)
            self.publish(TaskCancelled, task=name, attempt=rec.attempts, reason=reason)

    def ended_without_result(self, name: str) -> None:
        """``name`` failed (tolerated) or was skipped: its downstream asks the gate."""
        self._gate.ended_without_result(name)
        rs = self._ready_set
        rs.done(name)
        self._ready.extend(rs.get_ready())

    def cancel_leftovers(self, why: str) -> None:
        """At the run's end no task is left RUNNING or PENDING: what still runs was cut
        short; what never started is CANCELLED too, with ``why`` the run stopped (no
        event and no save: it never started, and a resume runs it in any case)."""
        for name, rec in self.tasks.items():
            if rec.state is _RUNNING:
                self.cancelled(name, (
                    "the run stopped before all its items or iterations ran"
                    if name in self._fans else "the run stopped while it started"
                ))
            elif rec.state is _PENDING:
                move(rec, TaskState.CANCELLED)
                rec.reason = f"never started: {why}"

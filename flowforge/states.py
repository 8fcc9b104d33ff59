"""Lifecycles of a task and of a run, with the transitions each may take.

A task moves PENDING -> RUNNING -> SUCCEEDED or FAILED. A failed attempt that will be
retried goes RUNNING -> PENDING until its delay is over. PENDING -> SKIPPED when it will
never run (its trigger, a branch or its condition says so); RUNNING -> CANCELLED on
Ctrl-C, the run's timeout or a cancel request, while tasks that had not started stay
PENDING, so that a resume runs them (PENDING -> CANCELLED is allowed for a cancel that
names a task before it starts). PENDING -> SUCCEEDED is a
result restored from an earlier run. PENDING -> FAILED is a failure before the task could
start: its condition raised, an input could not be loaded back, or what it asks for can
never be granted. Nothing leaves SUCCEEDED, FAILED, SKIPPED or CANCELLED.
"""

from __future__ import annotations

from enum import Enum

from .errors import InvalidTransitionError

__all__ = ["ALLOWED", "RunStatus", "TaskState", "check_transition"]


class TaskState(str, Enum):
    """Where one task of one run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the states a task never leaves."""
        return self in _FINAL


class RunStatus(str, Enum):
    """Where a run stands; compares equal to its string value ("succeeded", ...)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED})

ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset(
        {TaskState.RUNNING, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.SUCCEEDED,
         TaskState.FAILED}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.PENDING, TaskState.CANCELLED}
    ),
}

_WHY_NOT = {
    TaskState.SUCCEEDED: "a task that succeeded never runs again in the same run",
    TaskState.FAILED: "a failed task only runs again in a new (or resumed) run",
    TaskState.SKIPPED: "a skipped task stays skipped for the rest of the run",
    TaskState.CANCELLED: "a cancelled task stays cancelled for the rest of the run",
    TaskState.PENDING: "a pending task is already waiting to start",
    TaskState.RUNNING: "a running task must finish, fail or be cancelled",
}


def check_transition(task: str, old: TaskState, new: TaskState) -> None:
    """Raise :class:`InvalidTransitionError` unless ``old -> new`` is allowed."""
    if new not in ALLOWED.get(old, frozenset()):
        msg = f"task {task!r} cannot go from {old.value} to {new.value}: {_WHY_NOT[old]}"
        raise InvalidTransitionError(msg, task=task, old=old, new=new)

"""Events a run emits, one frozen keyword-only dataclass each.

Subscribe by type (``wf.events.subscribe(TaskFailed, handler)``); subscribing to
:class:`Event` receives everything. Events are published in the driver process, in causal
order: a task's ``TaskStarted`` comes before its ``TaskSucceeded``, which comes before any
``TaskStarted`` of a task that needed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Event",
    "TaskCancelled",
    "TaskEvent",
    "TaskFailed",
    "TaskRetrying",
    "TaskSkipped",
    "TaskStarted",
    "TaskSucceeded",
    "TaskWaiting",
    "WorkflowFinished",
    "WorkflowStarted",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base of every event: which workflow, which run, when (``time.time()`` seconds)."""

    workflow: str
    run_id: str
    timestamp: float


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowStarted(Event):
    """A run began. ``resumed`` runs reuse ``restored`` results saved by an earlier run;
    ``reasons`` groups the tasks that run again by why (code changed, failed last
    time, ...); ``notes`` says what was dropped or distrusted while loading state."""

    total_tasks: int
    executor: str
    resumed: bool = False
    restored: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEvent(Event):
    """Base of the per-task events: the task's name and the attempt (1-based). ``index``
    is set for one item of a mapped task or one iteration of a looping task."""

    task: str
    attempt: int
    index: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskWaiting(TaskEvent):
    """A ready attempt cannot start yet: ``reason`` says what it waits for (CPUs, memory,
    GPUs, a pool, a rate limit). Published once per wait."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskStarted(TaskEvent):
    """An attempt was handed to an executor."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSucceeded(TaskEvent):
    """An attempt returned; ``duration`` in seconds."""

    duration: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskFailed(TaskEvent):
    """An attempt raised; ``will_retry`` says whether another attempt follows."""

    duration: float
    error: BaseException
    will_retry: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRetrying(TaskEvent):
    """Attempt ``attempt`` will start after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSkipped(TaskEvent):
    """The task will not run; ``reason`` says why (e.g. an upstream failed)."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCancelled(TaskEvent):
    """A running attempt was stopped: Ctrl-C, the run's timeout, or a cancel request."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowFinished(Event):
    """A run ended with ``status`` ("succeeded", "failed" or "cancelled"); ``reason``
    says why a cancelled run stopped (who asked)."""

    status: str
    duration: float
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    error: BaseException | None = None
    cancelled: int = 0
    reason: str = ""

"""Run metrics: per-task duration, attempts and state, and the run's totals.

Built once from the engine's task records when a run ends, rather than by a listener
counting events, so it costs nothing per task and is exact even with no subscribers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from .states import TaskState

if TYPE_CHECKING:
    from .result import TaskRun

_VALUES = {s: s.value for s in TaskState}

__all__ = ["RunMetrics", "TaskMetrics"]


class TaskMetrics(NamedTuple):
    """One task's figures: seconds of its last attempt, attempts made, final state, and
    seconds it waited, ready, for resources or a rate limit. (A named tuple: a run of
    100,000 tasks makes 100,000 of them.)"""

    duration: float | None
    attempts: int
    state: str
    waited: float = 0.0


@dataclass(frozen=True, kw_only=True)
class RunMetrics:
    """Counts and timings for a whole run; ``to_dict()`` is JSON-serialisable."""

    total_duration: float
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    pending: int = 0
    retries: int = 0
    tasks: dict[str, TaskMetrics] = field(default_factory=dict)
    #: The most in use at once: ``cpus``, ``memory`` (bytes), ``gpus``, ``tasks``
    #: (running attempts); empty when the run declared no limits or requests.
    peak: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_tasks(
        cls, tasks: Iterable[TaskRun], total_duration: float,
        peak: dict[str, float] | None = None,
    ) -> RunMetrics:
        counts = {"succeeded": 0, "failed": 0, "skipped": 0, "cancelled": 0, "pending": 0}
        retries = 0
        per_task: dict[str, TaskMetrics] = {}
        for t in tasks:
            state = _VALUES[t.state]
            if state in counts:
                counts[state] += 1
            if t.attempts > 1:
                retries += t.attempts - 1
            per_task[t.name] = TaskMetrics(t.duration, t.attempts, state, t.waited)
        return cls(total_duration=total_duration, retries=retries, tasks=per_task,
                   peak=dict(peak or {}), **counts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, tasks={}))
        out["tasks"] = {name: m._asdict() for name, m in self.tasks.items()}
        return out

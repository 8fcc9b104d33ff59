"""What ``Workflow.run()`` returns: the run's status, each task's record and results."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import WorkflowFailedError
from .metrics import RunMetrics
from .states import RunStatus, TaskState

__all__ = ["Results", "RunResult", "TaskRun"]


class TaskRun:
    """One task's record in one run (mutated by the engine while the run goes on)."""

    __slots__ = (
        "name", "state", "attempts", "started", "finished", "duration", "error", "restored",
        "tolerated", "waited", "reason",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.restored = False  # True: its result came from an earlier run's saved state
        self.tolerated = False  # True: it failed under on_error="continue"; the run did not
        self.waited = 0.0  # seconds it was ready but waited for resources or a rate limit
        self.state = TaskState.PENDING
        self.attempts = 0
        self.started: float | None = None
        self.finished: float | None = None
        self.duration: float | None = None
        self.error: BaseException | None = None
        self.reason: str | None = None  # why it was skipped or cancelled

    def __repr__(self) -> str:
        err = f", error={self.error!r}" if self.error is not None else ""
        return f"TaskRun({self.name!r}, {self.state.value}, attempts={self.attempts}{err})"


class Results(Mapping[str, Any]):
    """Task results by name, in the order the tasks finished.

    With autosave on, the engine lets go of a result once every task that needs it has
    it; such a result (and one restored from an earlier run) is loaded back from the state
    folder the first time it is asked for here, then kept."""

    __slots__ = ("_values", "_names", "_known", "_load")

    def __init__(
        self,
        values: dict[str, Any],
        names: list[str] | None = None,
        load: Callable[[str], Any] | None = None,
    ) -> None:
        self._values = values
        self._names = list(values) if names is None else names
        self._known = set(self._names)
        self._load = load

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            if self._load is None or name not in self._known:
                raise
        value = self._values[name] = self._load(name)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n!r}: {self._values[n]!r}" if n in self._values else f"{n!r}: <saved>"
            for n in self._names[:20]
        )
        more = f", ... {len(self._names) - 20} more" if len(self._names) > 20 else ""
        return f"Results({{{shown}{more}}})"


class RunResult:
    """The outcome of a run: ``status``, ``ok``, ``results``, ``tasks``, ``metrics``."""

    def __init__(
        self,
        *,
        workflow: str,
        run_id: str,
        status: RunStatus,
        results: Mapping[str, Any],
        tasks: dict[str, TaskRun],
        metrics: RunMetrics,
        started: float,
        finished: float,
        error: BaseException | None = None,
        resumed: bool = False,
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.status = status
        self.results: Mapping[str, Any] = results if isinstance(results, Results) else Results(
            dict(results)
        )
        self.tasks: Mapping[str, TaskRun] = tasks
        self.metrics = metrics
        self.started = started
        self.finished = finished
        self.error = error
        self.resumed = resumed

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status is RunStatus.SUCCEEDED

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def __getitem__(self, name: str) -> Any:
        try:
            return self.results[name]
        except KeyError:
            if name in self.tasks:
                state = self.tasks[name].state.value
                msg = f"task {name!r} has no result: it ended {state} in run {self.run_id}"
            else:
                msg = f"workflow {self.workflow!r} has no task named {name!r}"
            raise KeyError(msg) from None

    def raise_for_status(self) -> RunResult:
        """Raise :class:`WorkflowFailedError` (cause: the first task error) unless ok."""
        if self.ok:
            return self
        if isinstance(self.error, WorkflowFailedError):
            raise self.error
        failed = next(
            (t for t in self.tasks.values() if t.state is TaskState.FAILED and not t.tolerated),
            None,
        )
        if failed is not None:
            msg = (
                f"workflow {self.workflow!r} run {self.run_id} {self.status.value}: "
                f"task {failed.name!r} failed with {type(failed.error).__name__}: {failed.error}"
            )
            raise WorkflowFailedError(
                msg, workflow=self.workflow, run_id=self.run_id, task=failed.name,
                status=self.status.value,
            ) from failed.error
        msg = f"workflow {self.workflow!r} run {self.run_id} {self.status.value}"
        raise WorkflowFailedError(
            msg, workflow=self.workflow, run_id=self.run_id, task=None, status=self.status.value
        ) from self.error

    def __repr__(self) -> str:
        return (
            f"<RunResult {self.workflow!r} run_id={self.run_id} status={self.status.value} "
            f"tasks={len(self.tasks)}>"
        )

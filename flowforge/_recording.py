"""The engine's side of persistence: restoring saved tasks, saving outcomes, letting go
of results no task still needs.

A mixin of :class:`~flowforge._engine.Engine`, kept apart so the scheduling loop reads on
its own. Every method here is a no-op path when the run has no session (autosave off).
See "Persistence" in the engine's design essay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StateError
from .metrics import RunMetrics
from .states import RunStatus, TaskState

if TYPE_CHECKING:
    from ._binding import Binding
    from ._control import Gate
    from .dag import CompiledDAG, ReadySet
    from .persistence.session import RunSession
    from .result import TaskRun

__all__ = ["HeldResults", "Recording"]


class HeldResults(dict[str, Any]):
    """Results in memory; a missing one is loaded from the run's saved state."""

    __slots__ = ("_load",)

    def __init__(self, load: Callable[[str], Any]) -> None:
        super().__init__()
        self._load = load

    def __missing__(self, name: str) -> Any:
        value = self[name] = self._load(name)
        return value


class Recording:
    """Persistence hooks of the engine (mixed into :class:`Engine`)."""

    tasks: dict[str, TaskRun]
    results: dict[str, Any]
    _graph: CompiledDAG
    _bindings: dict[str, Binding] | Any
    _gate: Gate
    _ready_set: ReadySet
    _session: RunSession | None
    _saved: set[str]
    _consumers_left: dict[str, int] | None
    _stopping: bool
    _fans: dict[str, Any]
    _first_error: BaseException | None

    def _restore(self, session: RunSession) -> None:
        restored = session.restored
        for name, saved in restored.items():
            rec = self.tasks[name]
            rec.state = TaskState.SUCCEEDED  # PENDING -> SUCCEEDED: restored
            rec.restored = True
            rec.attempts = saved.attempts
            rec.started = saved.started
            rec.finished = saved.finished
            rec.duration = saved.duration
        self._ready_set.restore(restored)
        self._saved.update(restored)
        for name in restored:
            if self._bindings[name].task.branch:  # its choice still holds: skip the rest
                self._gate.chose(name, self.results[name])
        downstream = self._graph.downstream
        self._consumers_left = {
            n: len(ds) if n not in restored else sum(1 for d in ds if d not in restored)
            for n, ds in downstream.items()
        }

    def _finish_session(
        self, session: RunSession, status: RunStatus, metrics: RunMetrics,
        error: BaseException | None,
    ) -> BaseException | None:
        counts = {
            "succeeded": metrics.succeeded,
            "failed": metrics.failed,
            "skipped": metrics.skipped,
            "cancelled": sum(1 for r in self.tasks.values() if r.state is TaskState.CANCELLED),
        }
        try:
            session.finish(status=status.value, counts=counts)
        except StateError as exc:
            return error if error is not None else exc
        return error

    def _release_inputs(self, name: str) -> None:
        """``name`` has its inputs: drop each saved one no other task still needs."""
        left = self._consumers_left
        assert left is not None
        saved = self._saved
        results = self.results
        for up in self._graph.upstream[name]:
            n = left[up] - 1
            left[up] = n
            if n == 0 and up in saved:
                results.pop(up, None)

    def _save_success(self, rec: TaskRun, value: Any) -> None:
        session = self._session
        assert session is not None
        try:
            if rec.name in self._fans and self._bindings[rec.name].task.map:
                saved = session.mapped_succeeded(rec, len(value))
            else:
                saved = session.succeeded(rec, value)
        except StateError as exc:
            self._state_failed(exc)
            return
        if saved:
            self._saved.add(rec.name)
            left = self._consumers_left
            if left is not None and left[rec.name] == 0:
                self.results.pop(rec.name, None)

    def _save_end(self, rec: TaskRun) -> None:
        if self._session is None:
            return
        try:
            self._session.ended(rec)
        except StateError as exc:
            self._state_failed(exc)

    def _state_failed(self, error: StateError) -> None:
        """Saving failed: stop starting tasks, keep nothing more from the session."""
        self._session = None
        self._consumers_left = None  # keep every result in memory from here on
        self._stopping = True
        if self._first_error is None or not isinstance(self._first_error, StateError):
            self._first_error = error


"""The engine's side of persistence: restoring an earlier run's tasks, saving each
outcome through the run session, and letting go of results no task still needs.

With autosave off there is no session and every method returns at once. A save that
fails (a full disk) is handed to ``on_error`` once; from then on the recorder keeps
nothing more and every result stays in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import StateError
from ..states import TaskState
from .lifecycle import move

if TYPE_CHECKING:
    from .._binding import Binding
    from ..dag import CompiledDAG, ReadySet
    from ..persistence.session import RunSession
    from ..result import TaskRun
    from .gate import Gate

__all__ = ["Recorder"]


class Recorder:
    """Saves one run's outcomes (see the module docstring)."""

    __slots__ = ("session", "resumed", "_run_session", "_graph", "_values", "_on_error", "_saved",
                 "_consumers_left")

    def __init__(
        self, session: RunSession | None, graph: CompiledDAG, values: dict[str, Any],
        on_error: Callable[[StateError], None],
    ) -> None:
        self.session = session  # None once a save failed: nothing more is kept
        self._run_session = session  # still told how the run ended
        self.resumed = session is not None and session.resumed
        self._graph = graph
        self._values = values
        self._on_error = on_error
        self._saved: set[str] = set()
        #: per task, the tasks downstream still to start; None: keep every result
        self._consumers_left: dict[str, int] | None = None

    def restore(
        self, tasks: Mapping[str, TaskRun], ready_set: ReadySet, gate: Gate,
        bindings: Mapping[str, Binding],
    ) -> int:
        """Mark the tasks restored from an earlier run SUCCEEDED and done; re-apply their
        branch choices. Returns how many there were."""
        session = self.session
        if session is None:
            return 0
        restored = session.restored
        for name, saved in restored.items():
            rec = tasks[name]
            move(rec, TaskState.SUCCEEDED)  # PENDING -> SUCCEEDED: restored
            rec.restored = True
            rec.attempts = saved.attempts
            rec.started = saved.started
            rec.finished = saved.finished
            rec.duration = saved.duration
        ready_set.restore(restored)
        self._saved.update(restored)
        for name in restored:
            if bindings[name].task.branch:  # its choice still holds: skip the rest
                gate.chose(name, self._values[name])
        self._consumers_left = {
            n: len(ds) if n not in restored else sum(1 for d in ds if d not in restored)
            for n, ds in self._graph.downstream.items()
        }
        return len(restored)

    def inputs_taken(self, name: str) -> None:
        """``name`` has its inputs: drop each saved one no other task still needs."""
        left = self._consumers_left
        if left is None:
            return
        saved = self._saved
        values = self._values
        for up in self._graph.upstream[name]:
            n = left[up] - 1
            left[up] = n
            if n == 0 and up in saved:
                values.pop(up, None)

    def succeeded(self, rec: TaskRun, value: Any, *, mapped: bool = False) -> None:
        """Save a success (a mapped task's: its items were saved one by one)."""
        session = self.session
        if session is None:
            return
        try:
            if mapped:
                saved = session.mapped_succeeded(rec, len(value))
            else:
                saved = session.succeeded(rec, value)
        except StateError as exc:
            self._failed(exc)
            return
        if saved:
            self._saved.add(rec.name)
            left = self._consumers_left
            if left is not None and left[rec.name] == 0:
                self._values.pop(rec.name, None)

    def ended(self, rec: TaskRun) -> None:
        """Save a task that failed, was skipped or was cancelled."""
        if self.session is None:
            return
        try:
            self.session.ended(rec)
        except StateError as exc:
            self._failed(exc)

    def unit_succeeded(
        self, name: str, index: int, attempts: int, started: float, duration: float,
        value: Any, inputs: str, *, iteration: bool,
    ) -> None:
        """Save one map item's (or loop iteration's) result as soon as it is there."""
        if self.session is None:
            return
        try:
            self.session.unit_succeeded(
                name, index, attempts, started, duration, value, inputs, iteration=iteration
            )
        except StateError as exc:
            self._failed(exc)

    def saved_units(self, name: str, inputs: str) -> dict[int, Any]:
        """Items (iterations) of ``name`` saved earlier from the same upstream results."""
        return {} if self.session is None else self.session.saved_units(name, inputs)

    def load_unit(self, name: str, index: int) -> Any:
        """A saved item's (iteration's) result; StateError if it cannot be read."""
        if self.session is None:
            msg = f"item {index} of task {name!r} has no saved result: nothing is saved"
            raise StateError(msg, path=None, task=name)
        return self.session.load_unit(name, index)

    def finish(self, status: str, counts: Mapping[str, int]) -> StateError | None:
        """Write the run's summary; the error if that failed."""
        session = self._run_session
        if session is None:
            return None
        try:
            session.finish(status=status, counts=counts)
        except StateError as exc:
            return exc
        return None

    def _failed(self, error: StateError) -> None:
        self.session = None
        self._consumers_left = None  # keep every result in memory from here on
        self._on_error(error)

"""Control flow decided while a run goes on: trigger rules, conditions, branch choices.

The engine asks :class:`Gate` about a task only when something could stop it: it has a
condition (``when=``) or a trigger other than ``all_success``, an upstream ended without
a result (failed or skipped), or a branch passed it over. Every other task starts
without a question, which keeps the common path as cheap as it was.

A skipped task counts as finished for its downstream tasks, which then follow their own
triggers: with the default ``all_success`` a skip spreads, with ``all_done`` or
``none_failed`` it stops. An upstream that failed or was skipped hands ``None`` to a
task that runs anyway.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._private.handoff import materialize_inputs
from .errors import TaskError
from .events import TaskSkipped
from .states import TaskState, check_transition

if TYPE_CHECKING:
    from ._binding import Binding
    from .dag import CompiledDAG
    from .result import TaskRun

__all__ = ["Gate", "Gating", "branch_choice", "trigger_unmet"]

_S = TaskState.SUCCEEDED
_F = TaskState.FAILED
_WORDS = {TaskState.FAILED: "failed", TaskState.SKIPPED: "was skipped",
          TaskState.CANCELLED: "was cancelled"}


def trigger_unmet(trigger: str, upstream: Iterable[tuple[str, TaskState]]) -> str | None:
    """None when ``trigger`` lets a task run after upstreams ending in these states;
    otherwise the reason it is skipped."""
    ups = list(upstream)
    if trigger == "all_done" or not ups:
        return None
    if trigger == "all_success":
        for name, state in ups:
            if state is not _S:
                return f"upstream task {name!r} {_WORDS.get(state, state.value)}"
        return None
    succeeded = sum(1 for _, s in ups if s is _S)
    failed = sum(1 for _, s in ups if s is _F)
    met = {
        "one_success": succeeded > 0,
        "one_failed": failed > 0,
        "all_failed": failed == len(ups),
        "none_failed": failed == 0,
    }[trigger]
    if met:
        return None
    states = ", ".join(f"{n} {s.value}" for n, s in ups)
    return f"trigger {trigger!r} not met ({states})"


def branch_choice(branch: str, value: Any, downstream: Iterable[str]) -> set[str]:
    """The direct downstream tasks a branch's result names; TaskError for anything else."""
    options = list(downstream)
    if value is None:
        chosen: list[Any] = []
    elif isinstance(value, str):
        chosen = [value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        chosen = list(value)
    else:
        msg = (
            f"branch {branch!r} returned {value!r} ({type(value).__name__}); a branch returns "
            f"the name of a downstream task, a list of names, or None. Its downstream tasks: "
            f"{', '.join(repr(o) for o in options) or 'none'}"
        )
        raise TaskError(msg, task=branch)
    unknown = [c for c in chosen if c not in options]
    if unknown:
        msg = (
            f"branch {branch!r} chose {unknown[0]!r}, which is not one of its direct "
            f"downstream tasks ({', '.join(repr(o) for o in options) or 'none'}); give that "
            f"task depends_on=[{branch!r}] or return one of these names"
        )
        raise TaskError(msg, task=branch, chosen=unknown[0])
    return set(chosen)


class Gate:
    """Which ready tasks need a question before they start, and the answers so far."""

    __slots__ = ("check", "vetoed", "absent", "_graph", "_bindings", "_tasks")

    def __init__(
        self,
        graph: CompiledDAG,
        bindings: Mapping[str, Binding],
        tasks: Mapping[str, TaskRun],
    ) -> None:
        self._graph = graph
        self._bindings = bindings
        self._tasks = tasks
        #: Tasks to ask about when they are ready.
        self.check: set[str] = {
            n for n, b in bindings.items() if b.when is not None or b.task.trigger != "all_success"
        }
        #: Tasks a branch passed over, and which branch.
        self.vetoed: dict[str, str] = {}
        #: Tasks that ended without a result: their consumers get None.
        self.absent: set[str] = set()

    def ended_without_result(self, name: str) -> None:
        """``name`` failed or was skipped: its downstream tasks need a question."""
        self.absent.add(name)
        self.check.update(self._graph.downstream[name])

    def chose(self, branch: str, value: Any) -> None:
        """Apply a branch's result (raises TaskError if it names a task it cannot)."""
        downstream = self._graph.downstream[branch]
        chosen = branch_choice(branch, value, downstream)
        for d in downstream:
            if d not in chosen:
                self.vetoed.setdefault(d, branch)
                self.check.add(d)

    def skip_reason(self, name: str) -> str | None:
        """Why ``name`` must be skipped before its condition is asked, or None."""
        by = self.vetoed.get(name)
        if by is not None:
            return f"not chosen by {by}"
        tasks = self._tasks
        return trigger_unmet(
            self._bindings[name].task.trigger,
            ((u, tasks[u].state) for u in self._graph.upstream[name]),
        )


class Gating:
    """The engine's side of the gate (mixed into :class:`~flowforge._engine.Engine`):
    asking about a ready task, and skipping it."""

    if TYPE_CHECKING:
        from collections import deque

        from .dag import ReadySet

        tasks: Mapping[str, TaskRun]
        _gate: Gate
        _bindings: Mapping[str, Binding]
        _ready_set: ReadySet
        _ready: deque[Any]

        def _arguments(self, name: str, b: Binding, attempt: int,
                       args: tuple[tuple[str, int, str], ...] | None = None
                       ) -> dict[str, Any]: ...
        def _failed(self, name: str, error: BaseException, duration: float, *,
                    retry: bool = True) -> None: ...
        def _save_end(self, rec: TaskRun) -> None: ...
        def _publish(self, event_type: type[Any], **fields: Any) -> Any: ...

    def _admit(self, name: str) -> bool:
        """Ask the gate whether a ready task runs: its trigger, a branch, its condition."""
        reason = self._gate.skip_reason(name)
        if reason is None:
            b = self._bindings[name]
            if b.when is None:
                return True
            try:
                ok = b.when(**materialize_inputs(self._arguments(name, b, 1, b.when_args)))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # the condition's error fails the task, unretried
                rec = self.tasks[name]
                rec.state = TaskState.RUNNING
                rec.attempts += 1
                rec.started = time.time()
                self._failed(name, exc, 0.0, retry=False)
                return False
            if ok:
                return True
            reason = "condition false"
        self._skip(name, reason)
        return False

    def _skip(self, name: str, reason: str) -> None:
        rec = self.tasks[name]
        check_transition(name, rec.state, TaskState.SKIPPED)
        rec.state = TaskState.SKIPPED
        rec.finished = time.time()
        self._save_end(rec)
        self._publish(TaskSkipped, task=name, attempt=rec.attempts, reason=reason)
        self._gate.ended_without_result(name)
        rs = self._ready_set
        rs.done(name)
        self._ready.extend(rs.get_ready())

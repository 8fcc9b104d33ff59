"""Control flow decided while a run goes on: trigger rules, conditions, branch choices.

The engine asks :class:`Gate` about a ready task only when something could stop it: it
has a condition (``when=``) or a trigger other than ``all_success``, an upstream ended
without a result (failed or skipped), or a branch passed it over (``check`` holds those).
Every other task starts without a question, which keeps the common path cheap.
:meth:`Gate.decide` answers with a decision: ``None`` (run it), a :class:`Skip` with the
reason, or a :class:`Fail` with the condition's own error.

A skipped task counts as finished for its downstream tasks, which then follow their own
triggers: with the default ``all_success`` a skip spreads, with ``all_done`` or
``none_failed`` it stops. An upstream that failed or was skipped hands ``None`` to a
task that runs anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import TaskError
from ..states import TaskState

if TYPE_CHECKING:
    from .._binding import Binding
    from ..dag import CompiledDAG
    from ..result import TaskRun

__all__ = ["Fail", "Gate", "Skip", "branch_choice", "trigger_unmet"]

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


class Skip(NamedTuple):
    """The task is skipped, for ``reason``."""

    reason: str


class Fail(NamedTuple):
    """The task fails before it starts, unretried: its condition raised ``error``."""

    error: BaseException


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

    def decide(
        self, name: str, condition_inputs: Callable[[], dict[str, Any]]
    ) -> Skip | Fail | None:
        """Whether ready task ``name`` runs (None), is skipped, or fails: its trigger, a
        branch, then its condition, called with ``condition_inputs()``."""
        reason = self.skip_reason(name)
        if reason is not None:
            return Skip(reason)
        when = self._bindings[name].when
        if when is None:
            return None
        try:
            ok = when(**condition_inputs())
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the condition's error fails the task, unretried
            return Fail(exc)
        return None if ok else Skip("condition false")

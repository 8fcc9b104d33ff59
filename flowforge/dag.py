"""The DAG: tasks, the edges between them, validation and the ready-set. It runs nothing.

Edges come from two places: dependencies declared on the tasks (``depends_on=``,
``add_dependency``) and dependencies inferred from parameter names when a workflow binds
its tasks. Validation reports a cycle as data (the task names on it, in order) and an
unknown dependency with the closest existing names.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Iterator

from ._task import Task
from .errors import WorkflowDefinitionError

__all__ = ["DAG", "ReadySet"]


class DAG:
    """Holds tasks by name and answers questions about their order."""

    def __init__(self, tasks: Iterable[Task] = (), *, name: str = "dag") -> None:
        self.name = name
        self._tasks: dict[str, Task] = {}
        self._inferred: dict[str, tuple[str, ...]] = {}
        for t in tasks:
            self.add_task(t)

    # -- building --------------------------------------------------------------------

    def add_task(self, task: Task) -> Task:
        """Add ``task``; a second task with the same name is a definition error."""
        if not isinstance(task, Task):
            msg = (
                f"{self._label()}: add_task() needs a Task, got {task!r} "
                f"({type(task).__name__}); wrap a function with @task or Task(name, fn)"
            )
            raise WorkflowDefinitionError(msg, workflow=self.name)
        if task.name in self._tasks and self._tasks[task.name] is not task:
            msg = (
                f"{self._label()} already has a task named {task.name!r}; "
                f"give one of them another name with @task(name=...)"
            )
            raise WorkflowDefinitionError(msg, workflow=self.name, task=task.name)
        self._tasks[task.name] = task
        return task

    def get_task(self, name: str) -> Task:
        """The task called ``name``."""
        try:
            return self._tasks[name]
        except KeyError:
            msg = f"{self._label()} has no task named {name!r}{self._suggest(name)}"
            raise WorkflowDefinitionError(msg, workflow=self.name, task=name) from None

    def add_dependency(self, task: str | Task, upstream: str | Task) -> None:
        """Make ``task`` wait for ``upstream`` (tasks or names)."""
        name = task.name if isinstance(task, Task) else task
        self.get_task(name).add_dependency(upstream)

    def set_inferred(self, name: str, upstream: tuple[str, ...]) -> None:
        """Record the dependencies of ``name`` found by binding its parameters."""
        self._inferred[name] = upstream

    # -- questions -------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, Task]:
        """Tasks by name, in the order they were added."""
        return self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def upstream(self, name: str) -> tuple[str, ...]:
        """Names ``name`` waits for: declared first, then inferred, without repeats."""
        declared = self._tasks[name].depends_on
        inferred = self._inferred.get(name, ())
        if not inferred:
            return tuple(declared)
        if not declared:
            return inferred
        return tuple(dict.fromkeys([*declared, *inferred]))

    def downstream(self, name: str) -> list[str]:
        """Names that wait for ``name``."""
        return [n for n in self._tasks if name in self.upstream(n)]

    def validate(self) -> None:
        """Raise :class:`WorkflowDefinitionError` for an unknown dependency or a cycle."""
        self.compile()

    def topological_order(self) -> list[str]:
        """Every task name, each after all of its upstreams (ties in insertion order)."""
        return list(self.compile().order)

    def compile(self) -> CompiledDAG:
        """Check the graph and return the arrays the engine walks."""
        upstream: dict[str, tuple[str, ...]] = {}
        downstream: dict[str, list[str]] = {n: [] for n in self._tasks}
        inferred = self._inferred
        for name, t in self._tasks.items():
            declared = t.depends_on
            ups = inferred.get(name, ())  # as upstream(name), inlined: 10,000s of tasks
            if declared:
                ups = tuple(declared) if not ups else tuple(dict.fromkeys([*declared, *ups]))
            for up in ups:
                if up not in downstream:
                    msg = (
                        f"task {name!r} depends on {up!r}, which is not a task in "
                        f"{self._label()}{self._suggest(up)}"
                    )
                    raise WorkflowDefinitionError(
                        msg, workflow=self.name, task=name, dependency=up
                    )
                if up == name:
                    msg = (
                        f"{self._label()} has a cycle: {name} -> {name}; "
                        f"task {name!r} cannot depend on itself"
                    )
                    raise WorkflowDefinitionError(
                        msg, workflow=self.name, task=name, cycle=[name, name]
                    )
                downstream[up].append(name)
            upstream[name] = ups
        waiting = {n: len(u) for n, u in upstream.items()}
        order = [n for n, c in waiting.items() if c == 0]
        i = 0
        while i < len(order):
            for d in downstream[order[i]]:
                waiting[d] -= 1
                if waiting[d] == 0:
                    order.append(d)
            i += 1
        if len(order) != len(upstream):
            cycle = _find_cycle(upstream, {n for n, c in waiting.items() if c > 0})
            path = " -> ".join(cycle)
            msg = (
                f"{self._label()} has a cycle: {path}; "
                "remove one of these dependencies so the tasks can be ordered"
            )
            raise WorkflowDefinitionError(msg, workflow=self.name, cycle=cycle)
        return CompiledDAG(order, upstream, downstream)

    # -- helpers ---------------------------------------------------------------------

    def _label(self) -> str:
        return f"workflow {self.name!r}"

    def _suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._tasks), n=3)
        if close:
            return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        known = ", ".join(repr(n) for n in list(self._tasks)[:8])
        return f"; its tasks are {known}" if known else "; it has no tasks yet"


class CompiledDAG:
    """A validated snapshot: topological ``order`` and adjacency in both directions."""

    __slots__ = ("order", "upstream", "downstream")

    def __init__(
        self,
        order: list[str],
        upstream: dict[str, tuple[str, ...]],
        downstream: dict[str, list[str]],
    ) -> None:
        self.order = order
        self.upstream = upstream
        self.downstream = downstream

    def ready_set(self) -> ReadySet:
        return ReadySet(self)


class ReadySet:
    """Which tasks may start now, in the manner of ``graphlib.TopologicalSorter``.

    ``get_ready()`` hands out tasks whose upstreams are all ``done()``; ``drop(name)``
    removes a task that will never run, along with everything downstream of it.
    """

    __slots__ = ("_downstream", "_waiting", "_ready", "_dropped")

    def __init__(self, graph: CompiledDAG) -> None:
        self._downstream = graph.downstream
        self._waiting = {n: len(u) for n, u in graph.upstream.items()}
        self._ready = [n for n, c in self._waiting.items() if c == 0]
        self._dropped: set[str] = set()

    def get_ready(self) -> list[str]:
        """Tasks that became ready since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def restore(self, names: Collection[str]) -> None:
        """Count ``names`` as done before anything starts (results restored from an
        earlier run). Every upstream of a restored task must be restored too."""
        if not names:
            return
        waiting = self._waiting
        for n in names:
            for d in self._downstream[n]:
                waiting[d] -= 1
        self._ready = [n for n, c in waiting.items() if c == 0 and n not in names]

    def done(self, name: str) -> None:
        """``name`` finished: its downstream tasks are one upstream closer to ready."""
        waiting = self._waiting
        for d in self._downstream[name]:
            left = waiting[d] - 1
            waiting[d] = left
            if left == 0 and d not in self._dropped:
                self._ready.append(d)

    def drop(self, name: str) -> list[str]:
        """Forget ``name``'s downstream tasks forever; returns them in order."""
        dropped: list[str] = []
        stack = list(self._downstream[name])
        while stack:
            d = stack.pop()
            if d in self._dropped:
                continue
            self._dropped.add(d)
            dropped.append(d)
            stack.extend(self._downstream[d])
        return dropped


def _find_cycle(upstream: dict[str, tuple[str, ...]], stuck: set[str]) -> list[str]:
    """A cycle among ``stuck`` nodes as a path that repeats its first node at the end."""
    start = min(stuck, key=list(upstream).index)
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(u for u in upstream[node] if u in stuck)
    cycle = path[seen[node] :]
    cycle.reverse()  # upstream walk -> dependency order: a -> b means b depends on a
    return [*cycle, cycle[0]]

"""The keyword arguments of one attempt, built from its task's binding.

Each parameter's source was decided once, when the workflow was bound (see
:mod:`flowforge._binding`): an upstream result, a run param, a fixture, or the
``TaskContext``. An upstream that failed or was skipped hands ``None`` to a task that
runs anyway (``absent``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._binding import FROM_FIXTURE, FROM_PARAM, FROM_TASK
from .._task import TaskContext

if TYPE_CHECKING:
    from .._binding import Binding
    from .._fixtures import FixtureRef
    from .spec import RunSpec

__all__ = ["Arguments"]


class Arguments:
    """Builds attempts' arguments for one run."""

    __slots__ = ("_values", "_absent", "_params", "_fixtures", "_upstream", "_context",
                 "_gpus_of")

    def __init__(
        self,
        *,
        values: Mapping[str, Any],
        absent: set[str],
        params: Mapping[str, Any],
        fixtures: Mapping[str, FixtureRef],
        upstream: Mapping[str, Any],
        context: dict[str, Any],
        gpus_of: Callable[[str, int], list[int] | None],
    ) -> None:
        self._values = values  # read live: results arrive while the run goes on
        self._absent = absent
        self._params = params
        self._fixtures = fixtures
        self._upstream = upstream
        self._context = context  # the TaskContext fields every attempt shares
        self._gpus_of = gpus_of

    @classmethod
    def for_run(
        cls, spec: RunSpec, values: Mapping[str, Any], absent: set[str], resumed: bool,
        gpus_of: Callable[[str, int], list[int] | None],
    ) -> Arguments:
        """The builder for one run: its fixtures keyed to the run (a process worker keeps
        one of each per run), the context fields every attempt shares."""
        return cls(
            values=values,
            absent=absent,
            params=spec.params,
            fixtures={n: dataclasses.replace(r, key=spec.run_id)
                      for n, r in spec.fixtures.items()},
            upstream=spec.graph.upstream,
            context={
                "run_id": spec.run_id, "workflow": spec.workflow, "params": spec.params,
                "log_file": spec.log_file, "log_console": spec.log_console,
                "resumed": resumed, "scheduled_for": spec.scheduled_for,
            },
            gpus_of=gpus_of,
        )

    def build(
        self, name: str, b: Binding, attempt: int,
        args: tuple[tuple[str, int, str], ...] | None = None,
    ) -> dict[str, Any]:
        """The arguments of attempt ``attempt`` of ``name`` (``args``: another callable's
        bindings, a condition's)."""
        values = self._values
        absent = self._absent
        kwargs: dict[str, Any] = {}
        for param, kind, source in b.args if args is None else args:
            if kind == FROM_TASK:
                kwargs[param] = None if absent and source in absent else values[source]
            elif kind == FROM_PARAM:
                kwargs[param] = self._params[source]
            elif kind == FROM_FIXTURE:
                kwargs[param] = self._fixtures[source]
            else:
                kwargs[param] = TaskContext(
                    task=name,
                    attempt=attempt,
                    inputs={
                        u: None if u in absent else values[u] for u in self._upstream[name]
                    },
                    gpus=self._gpus_of(name, -1),
                    **self._context,
                )
        if args is None:
            for up in b.extra_inputs:
                kwargs[up] = None if absent and up in absent else values[up]
        return kwargs

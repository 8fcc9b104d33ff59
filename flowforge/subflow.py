"""Subflows: a whole workflow used as one task of another.

``parent.add_subflow(other, name="ingest", params={...})``, or ``other.as_task(name=...)``
inside the parent's block, adds a :class:`SubflowTask`. When it runs, it runs ``other``
as a nested run in the driver (on ``other``'s own executor), with ``params`` plus the
results of the subflow task's upstreams (each under its task's name) as the nested run's
params. Its result is the dict of the nested run's task results; a nested failure fails
the subflow task with the nested error as its cause.

Its tasks' events reach the parent's bus (and so its logs) named ``ingest.<task>``, or
``ingest[3].<task>`` for item 3 of a mapped subflow (``as_task(map="files")``: each item
goes through the whole subflow, as the param ``item_param=`` names, or the nested
workflow's param named like the mapped task, or its only required param; items run in
parallel). Upstream results the nested workflow does not take are not passed.

Resume: a nested run is saved in the parent's state folder under the workflow name
``<parent>.<name>`` (``<parent>.<name>[i]`` per item). When the parent resumes, or
retries the subflow task, the nested run resumes too and only its unfinished tasks run;
a fresh parent run starts the nested runs fresh.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._task import Task, TaskContext
from .errors import WorkflowDefinitionError
from .events import Event, TaskEvent, WorkflowFinished, WorkflowStarted
from .states import RunStatus

if TYPE_CHECKING:
    from ._workflow import Workflow

__all__ = ["SubflowTask"]


class SubflowTask(Task):
    """A task that runs a whole workflow (see the module docstring)."""

    def __init__(
        self,
        flow: Workflow,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        map: str | Iterable[str] | None = None,
        depends_on: Iterable[str | Task] = (),
        item_param: str | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("executor", "thread")  # it waits on its own run: never a process
        super().__init__(name, None, map=map, depends_on=depends_on, **options)
        self.subflow = flow
        self.subflow_params = dict(params or {})
        self.item_param = item_param
        self.parent: Workflow | None = None

    def item_target(self, known: set[str] | None = None) -> str | None:
        """The nested workflow's param each item of a mapped subflow is passed as:
        ``item_param=``, else a param named like the mapped task, else the nested
        workflow's only required param (one that it takes by name with no default and
        that ``params=`` does not give). None when not mapped. Anything else is a
        :class:`WorkflowDefinitionError`, never a silent default."""
        if not self.map:
            return None
        from ._params import known_params, required_params

        flow = self.subflow
        if known is None:  # the nested workflow's params: see _params.known_params
            known = known_params(flow)
        where = f"subflow {self.name!r} (workflow {flow.name!r})"
        if self.item_param is not None:
            if self.item_param not in known:
                msg = (f"{where}: item_param={self.item_param!r} is not a param of "
                       f"{flow.name!r}; it takes {', '.join(map(repr, sorted(known))) or 'none'}")
                raise WorkflowDefinitionError(msg, task=self.name, parameter=self.item_param)
            return self.item_param
        if len(self.map) == 1 and self.map[0] in known:
            return self.map[0]
        required = sorted(required_params(flow) - set(self.subflow_params))
        if len(required) == 1:
            return required[0]
        which = ", ".join(map(repr, required)) or "none"
        msg = (f"{where} maps over {', '.join(map(repr, self.map))}, but which param of "
               f"{flow.name!r} each item goes to is unclear (required params: {which}); "
               "say it with item_param=...")
        raise WorkflowDefinitionError(msg, task=self.name)

    def run(self, ctx: TaskContext, **inputs: Any) -> Any:  # type: ignore[override]
        """Run the nested workflow; its task results, as a dict."""
        parent = self.parent
        flow = self.subflow
        label = self.name if ctx.map_index is None else f"{self.name}[{ctx.map_index}]"
        # The nested run is made by the subflow's own class, so this module never imports
        # flowforge.workflow (which imports this one to build SubflowTasks).
        nested = type(flow)(
            f"{ctx.workflow}.{label}",
            executor=flow.executor,
            max_workers=flow.max_workers,
            params={**flow.params, **self.subflow_params},
            on_error=flow.on_error,
            timeout=_nested_timeout(flow.timeout, self.timeout),
            log_dir=None,
            quiet=True,
            progress=False,
            state_dir=parent.state_dir if parent is not None else flow.state_dir,
            autosave=parent.autosave if parent is not None else flow.autosave,
            durability=parent.durability if parent is not None else flow.durability,
            state_store=parent.state_store if parent is not None else flow.state_store,
        )
        nested.defined_in = flow.defined_in  # its runs' key: where the subflow is defined
        nested.source = flow.source
        for inner in flow.dag.tasks.values():
            # An inner subflow is copied so that its parent is this nested run, not the
            # workflow it was defined in: its state and events follow the outermost run.
            nested.add_task(copy.copy(inner) if isinstance(inner, SubflowTask) else inner)
        nested.fixtures.update(flow.fixtures)
        if parent is not None:
            nested.events.subscribe(Event, _Forward(parent, ctx, label))
        fresh = ctx.attempt == 1 and not ctx.resumed
        result = nested.run(params=self._nested_params(inputs), fresh=fresh)
        if result.status is RunStatus.CANCELLED:
            raise KeyboardInterrupt  # Ctrl-C stopped the nested run: stop the parent too
        result.raise_for_status()
        return dict(result.results)


    def _nested_params(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The nested run's params from this task's inputs: a mapped item under its
        :meth:`item_target`, upstream results the nested workflow takes by name (the
        others only ordered this task)."""
        from ._params import known_params

        known = known_params(self.subflow)
        target = self.item_target(known)
        out = {}
        for key, value in inputs.items():
            if target is not None and key in self.map:
                out[target] = value
            elif key in known:
                out[key] = value
        return out


class _Forward:
    """Republish a nested run's task events on the parent's bus, renamed ``label.task``."""

    def __init__(self, parent: Workflow, ctx: TaskContext, label: str) -> None:
        self._bus = parent.events
        self._workflow = ctx.workflow
        self._run_id = ctx.run_id
        self._label = label

    def __call__(self, event: Event) -> None:
        if isinstance(event, (WorkflowStarted, WorkflowFinished)):
            return
        fields: dict[str, Any] = {"workflow": self._workflow, "run_id": self._run_id}
        if isinstance(event, TaskEvent):
            fields["task"] = f"{self._label}.{event.task}"
        self._bus.publish(dataclasses.replace(event, **fields))


def _nested_timeout(flow_timeout: float | None, task_timeout: float | None) -> float | None:
    """The nested run's own timeout: its workflow's, and shorter than the subflow task's
    so that it stops (and frees its lock) before the parent gives up on the attempt and
    retries it."""
    if task_timeout is None:
        return flow_timeout
    inner = max(task_timeout - min(1.0, task_timeout * 0.1), task_timeout * 0.5)
    return inner if flow_timeout is None else min(flow_timeout, inner)

"""Parameter binding: for each task parameter, where its value comes from.

:func:`bind` decides it for a whole workflow, in this order:

1. ``ctx``, or a parameter annotated ``TaskContext``: the task's :class:`TaskContext`;
2. a parameter named after another task: that task's result (and a dependency on it);
3. a parameter named after a fixture (``@wf.fixture``): the fixture's value;
4. a parameter named in the run's params: that value;
5. otherwise its default. A parameter with none of these is a definition error.

A ``**kwargs`` parameter also receives the results of declared dependencies not bound by
name, which is how a classic ``Task`` subclass's ``run(self, **inputs)`` gets its inputs.
A ``when=`` condition is bound like a task, and the tasks it reads become upstreams.
Binding runs when the ``with`` block exits (to find dependencies and report cycles
early) and again at ``run()``, when the run's params are known. The engine reads the
resulting :class:`Binding` when it starts a task; this module imports neither the engine
nor the workflow, so ``import flowforge`` stays light."""

from __future__ import annotations

import difflib
import inspect
import operator
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._task import TaskContext
from .errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from ._task import Task
    from ._workflow import Workflow
    from .dag import CompiledDAG

__all__ = [
    "FROM_CONTEXT", "FROM_PARAM", "FROM_FIXTURE", "FROM_TASK", "Binding", "bind",
    "call_hook", "definition_key", "unbound_error",
]

# Kinds of argument a task parameter can be bound to.
FROM_TASK = 0
FROM_PARAM = 1
FROM_CONTEXT = 2
FROM_FIXTURE = 3


@dataclass(slots=True)
class Binding:
    """How to call one task: its callable and where each argument comes from."""

    task: Task
    call: Callable[..., Any]
    args: tuple[tuple[str, int, str], ...]
    extra_inputs: tuple[str, ...]  # upstream results passed through **kwargs
    when: Callable[..., Any] | None = None  # the task's condition, bound like the task
    when_args: tuple[tuple[str, int, str], ...] = ()
    uses_fixtures: bool = False


def call_hook(hook: Callable[..., Any], arg: Any, what: str) -> None:
    """Call a user's failure hook in the driver; its own error is logged, never raised."""
    try:
        hook(arg)
    except Exception:
        import logging

        logging.getLogger("flowforge").exception("%s raised; the run goes on", what)


def bind(
    wf: Workflow, params: Mapping[str, Any], *, strict: bool
) -> tuple[dict[str, Binding], CompiledDAG]:
    """Where each task parameter's value comes from, for a run with ``params``; the
    compiled DAG with the dependencies binding found. ``strict``: an unbound parameter
    is an error (at ``run()``; not when the block exits, before params are known)."""
    tasks = wf.dag.tasks
    if strict and not tasks:
        msg = (
            f"workflow {wf.name!r} has no tasks; define them with @task inside the "
            "`with workflow(...)` block or add them with wf.add_task(...)"
        )
        raise WorkflowDefinitionError(msg, workflow=wf.name)
    bindings: dict[str, Binding] = {}
    resources = wf.fixtures
    for clash in resources.keys() & tasks.keys():
        msg = (
            f"workflow {wf.name!r} has a task and a fixture both named {clash!r}; "
            "rename one (a parameter of that name would be ambiguous)"
        )
        raise WorkflowDefinitionError(msg, workflow=wf.name, task=clash)
    specs: dict[Any, _Signature] = {}  # 10,000 tasks often share one function
    for name, t in tasks.items():
        call = t.callable
        try:
            spec = specs.get(call) or specs.setdefault(call, _signature(call, name))
        except TypeError:  # an unhashable callable object
            spec = _signature(call, name)
        args: list[tuple[str, int, str]] = []
        inferred: list[str] = []
        uses = False
        for pname, has_default, is_context in spec.params:
            if is_context:
                args.append((pname, FROM_CONTEXT, ""))
            elif pname in tasks and pname != name:
                args.append((pname, FROM_TASK, pname))
                inferred.append(pname)
            elif pname in resources:
                args.append((pname, FROM_FIXTURE, pname))
                uses = True
            elif pname in params:
                args.append((pname, FROM_PARAM, pname))
            elif not has_default and strict:
                raise unbound_error(wf, name, pname)
        for mapped in t.map:
            if mapped in tasks and not spec.var_keyword and all(a[0] != mapped for a in args):
                msg = (
                    f"task {name!r} maps over {mapped!r} but has no parameter named "
                    f"{mapped!r}; add one: it receives one item of {mapped!r}'s result"
                )
                raise WorkflowDefinitionError(
                    msg, workflow=wf.name, task=name, parameter=mapped
                )
        when_args: tuple[tuple[str, int, str], ...] = ()
        if t.when is not None:
            when_args = _bind_condition(wf, t, params, inferred, strict=strict)
        wf.dag.set_inferred(name, tuple(inferred))
        extra: tuple[str, ...] = ()
        if spec.var_keyword and t.depends_on:
            if args:
                bound = {a[0] for a in args}
                extra = tuple(d for d in t.depends_on if d not in bound)
            else:
                extra = tuple(t.depends_on)
        bindings[name] = Binding(t, call, tuple(args), extra, t.when, when_args, uses)
    return bindings, wf.dag.compile()


def _bind_condition(
    wf: Workflow, t: Task, params: Mapping[str, Any], inferred: list[str], *, strict: bool
) -> tuple[tuple[str, int, str], ...]:
    """Bind a ``when=`` condition like a task; the tasks it reads become upstreams."""
    assert t.when is not None
    tasks = wf.dag.tasks
    args: list[tuple[str, int, str]] = []
    for pname, has_default, is_context in _signature(t.when, t.name).params:
        if is_context:
            args.append((pname, FROM_CONTEXT, ""))
        elif pname in tasks and pname != t.name:
            args.append((pname, FROM_TASK, pname))
            if pname not in inferred:
                inferred.append(pname)
        elif pname in params:
            args.append((pname, FROM_PARAM, pname))
        elif not has_default and strict:
            err = unbound_error(wf, t.name, pname)
            msg = err.message.replace(
                f"task {t.name!r} has parameter",
                f"the condition (when=) of task {t.name!r} has parameter",
            )
            raise WorkflowDefinitionError(
                msg, workflow=wf.name, task=t.name, parameter=pname
            )
    return tuple(args)


def definition_key(wf: Workflow, params: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything binding reads, copied: equal keys bind equally. Built with C-level
    ``map`` (about 0.3 µs a task) so that validate() then run() binds once."""
    tasks = wf.dag.tasks
    values = tasks.values()
    return (
        list(tasks.items()),  # names and task identities, in order
        list(map(_BINDING_READS, values)),
        list(map(tuple, map(_DEPENDS_ON, values))),  # a copy: lists change in place
        frozenset(params),
        frozenset(wf.fixtures),
    )


def unbound_error(wf: Workflow, task: str, param: str) -> WorkflowDefinitionError:
    """The error of a task parameter bound to nothing, with a close task name if any."""
    close = difflib.get_close_matches(param, list(wf.dag.tasks), n=1)
    hint = f" (did you mean task {close[0]!r}?)" if close else ""
    msg = (
        f"task {task!r} has parameter {param!r} that matches no task, param or default"
        f"{hint}; add a task named {param!r}, pass params={{{param!r}: ...}}, "
        "or give it a default"
    )
    return WorkflowDefinitionError(msg, workflow=wf.name, task=task, parameter=param)


class _Signature:
    __slots__ = ("params", "var_keyword")

    def __init__(self, params: tuple[tuple[str, bool, bool], ...], var_keyword: bool) -> None:
        self.params = params
        self.var_keyword = var_keyword


# What binding reads from each task, besides depends_on (see _definition_key).
_BINDING_READS = operator.attrgetter("name", "callable", "when", "map")
_DEPENDS_ON = operator.attrgetter("depends_on")

_SIGNATURES: weakref.WeakKeyDictionary[Any, _Signature] = weakref.WeakKeyDictionary()


def _signature(call: Callable[..., Any], task: str) -> _Signature:
    """The parameters of ``call`` that binding cares about, cached per function."""
    key = getattr(call, "__func__", call)
    try:
        found = _SIGNATURES.get(key)
    except TypeError:
        found = None
    if found is not None:
        return found
    try:
        sig = inspect.signature(call)
    except (TypeError, ValueError) as exc:
        msg = f"task {task!r}: cannot read the parameters of {call!r} ({exc})"
        raise WorkflowDefinitionError(msg, task=task) from exc
    params: list[tuple[str, bool, bool]] = []
    var_keyword = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            msg = (
                f"task {task!r} has positional-only parameter {p.name!r}; FlowForge passes "
                "inputs by name, so remove the '/' from its signature"
            )
            raise WorkflowDefinitionError(msg, task=task, parameter=p.name)
        is_context = p.name == "ctx" or p.annotation in (
            TaskContext,
            "TaskContext",
            "flowforge.TaskContext",
            "flowforge.task.TaskContext",  # the last release's module path
            "flowforge._task.TaskContext",
        )
        params.append((p.name, p.default is not p.empty, is_context))
    found = _Signature(tuple(params), var_keyword)
    try:
        _SIGNATURES[key] = found
    except TypeError:
        pass
    return found

"""A workflow's shape as data and pictures: ``to_dict``, Mermaid, Graphviz DOT, text, and
back out as a YAML definition (``to_yaml``, read back by :mod:`flowforge.definitions`)."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any

from ._binding import FROM_CONTEXT, FROM_PARAM, FROM_TASK
from ._expressions import references
from .definitions.tasktypes import (
    LOOP_NAMES,
    DefinitionTask,
    ExpressionCondition,
    ExpressionUntil,
    _SharedFactory,
)
from .errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from ._task import Task
    from ._workflow import Workflow

__all__ = ["to_definition", "to_dict", "to_dot", "to_mermaid", "to_text", "to_yaml"]


def to_dict(wf: Workflow) -> dict[str, Any]:
    """Name, executor, params and each task (its function, dependencies and options)."""
    wf.validate()
    tasks = []
    for t in wf.dag:
        fn = t.fn if t.fn is not None else type(t)
        call = getattr(t, "target", None) or (
            f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"
        )
        entry: dict[str, Any] = {
            "id": t.name,
            "call": call,
            "depends_on": list(wf.dag.upstream(t.name)),
        }
        if t.retries:
            entry["retry"] = {"attempts": t.retries + 1, "delay": t.retry_delay,
                              "backoff": t.backoff}
        for option in ("timeout", "trigger", "on_error"):
            value = getattr(t, option)
            if value not in (None, "all_success"):
                entry[option] = value
        if t.map:
            entry["map"] = list(t.map)
        if t.loop is not None:
            entry["loop"] = {"max_iterations": t.loop.max_iterations,
                             "on_exhausted": t.loop.on_exhausted}
        if t.branch:
            entry["type"] = "branch"
        if t.when is not None:
            entry["when"] = "python"
        tasks.append(entry)
    executor = wf.executor if isinstance(wf.executor, str) else type(wf.executor).__name__
    return {"name": wf.name, "executor": executor, "params": _jsonable(wf.params),
            "tasks": tasks}


def to_mermaid(wf: Workflow) -> str:
    """A Mermaid flowchart (paste it into Markdown)."""
    lines = ["flowchart TD"]
    ids = _ids(wf)
    for t in wf.dag:
        shape = "{%s}" if t.branch else "[%s]"
        lines.append(f"    {ids[t.name]}{shape % _quote(t.name)}")
    for t in wf.dag:
        for up in wf.dag.upstream(t.name):
            lines.append(f"    {ids[up]} --> {ids[t.name]}")
    return "\n".join(lines) + "\n"


def to_dot(wf: Workflow) -> str:
    """Graphviz DOT (``dot -Tsvg``)."""
    lines = [f"digraph {json.dumps(wf.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for t in wf.dag:
        shape = ' shape=diamond' if t.branch else ""
        lines.append(f"    {json.dumps(t.name)} [label={json.dumps(t.name)}{shape}];")
    for t in wf.dag:
        for up in wf.dag.upstream(t.name):
            lines.append(f"    {json.dumps(up)} -> {json.dumps(t.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_text(wf: Workflow) -> str:
    """The DAG for a terminal: tasks in run order, each with what it waits for."""
    graph = wf.dag.compile()
    width = max((len(n) for n in graph.order), default=4)
    lines = [f"{wf.name}: {len(graph.order)} tasks"]
    for name in graph.order:
        ups = graph.upstream[name]
        lines.append(f"  {name:<{width}}  <- {', '.join(ups)}" if ups else f"  {name}")
    return "\n".join(lines) + "\n"


def to_yaml(wf: Workflow, folder: str | None = None) -> str:
    """A YAML definition of ``wf`` (see :func:`to_definition`)."""
    import yaml

    return str(yaml.safe_dump(to_definition(wf, folder), sort_keys=False))


def to_definition(wf: Workflow, folder: str | None = None) -> dict[str, Any]:
    """``wf`` as a definition that runs the same (written as YAML or JSON), to be saved
    in ``folder`` (default: the working folder): tasks must be module-level functions
    without Python conditions (``when=``) or loops, which a definition cannot name. A
    function of the script itself is called by that script's module name, as seen from
    ``folder``, so the definition runs from there."""
    folder = os.path.abspath(folder or os.getcwd())
    bindings, graph = wf._bind(wf.params, strict=True)  # noqa: SLF001 - same package
    doc: dict[str, Any] = {"name": wf.name}
    if isinstance(wf.executor, str):
        doc["executor"] = wf.executor
    if wf.max_workers is not None:
        doc["max_workers"] = wf.max_workers
    if wf.param_types:
        doc["params"] = wf.param_types
    elif wf.params:
        doc["params"] = {k: {"default": v} for k, v in wf.params.items()}
    tasks = []
    items_of = {t.map[0]: n for n, t in wf.dag.tasks.items()
                if isinstance(t, DefinitionTask) and t.item_from}
    for name in graph.order:
        b = bindings[name]
        t = b.task
        if isinstance(t, DefinitionTask):
            if name not in items_of:  # a map's items helper folds back into its task
                tasks.append(_definition_entry(t, graph.upstream[name], wf))
            continue
        if t.when is not None or t.fn is None:
            msg = (f"task {name!r} uses a Python-only feature (a when= callable or a Task "
                   "subclass) that YAML writes as an expression; rewrite it in the definition")
            raise WorkflowDefinitionError(msg, task=name)
        entry: dict[str, Any] = {"id": name, "call": _call_of(t.fn, name, folder)}
        if t.branch:
            entry["type"] = "branch"
        args = {}
        for param, kind, source in b.args:
            if kind == FROM_TASK:
                args[param] = f"${{{source}}}"
            elif kind == FROM_PARAM:
                args[param] = f"${{params.{source}}}"
            elif kind == FROM_CONTEXT:
                msg = f"task {name!r} takes ctx, which a YAML definition cannot pass"
                raise WorkflowDefinitionError(msg, task=name)
        if t.map:  # map over a task's result: each item reaches the parameter of its name
            if len(t.map) == 1:
                entry["map"] = f"${{{t.map[0]}}}"
                args[t.map[0]] = "${item}"
            else:
                entry["map"] = {m: f"${{{m}}}" for m in t.map}
                args.update({m: f"${{item.{m}}}" for m in t.map})
        if args:
            entry["with"] = args
        extra = sorted(set(graph.upstream[name]) - {s for _, k, s in b.args if k == FROM_TASK})
        if extra:
            entry["depends_on"] = extra
        entry.update(_common_options(t))
        tasks.append(entry)
    doc["tasks"] = tasks
    hooks = getattr(wf, "_failure_hooks", [])
    if hooks:
        fn = hooks[0]
        doc["on_error"] = {"call": f"{fn.__module__}:{fn.__qualname__}"}
    elif wf.on_error != "fail_fast":
        doc["on_error"] = wf.on_error
    if wf.limits is not None:
        lim = wf.limits
        doc["limits"] = {k: v for k, v in (("cpus", lim.cpus), ("memory", lim.memory),
                                           ("gpus", lim.gpus),
                                           ("max_concurrent_tasks", lim.max_concurrent_tasks))
                         if v is not None}
    if wf.rate_limits:
        doc["rate_limits"] = {k: v.rate for k, v in wf.rate_limits.items()}
    if wf.concurrency:
        doc["concurrency"] = dict(wf.concurrency)
    shared = {}
    for rname, res in wf.fixtures.items():
        if not isinstance(res.fn, _SharedFactory):
            msg = f"fixture {rname!r} is a Python function; YAML cannot name it"
            raise WorkflowDefinitionError(msg, fixture=rname)
        shared[rname] = {"call": res.fn.target, **({"with": res.fn.args} if res.fn.args else {})}
    if shared:
        doc["fixtures"] = shared
    meta = wf.definition or {}
    for key in ("version", "description", "schedule"):
        if meta.get(key) is not None:
            doc[key] = meta[key]
    return doc


#: The module name a script gets when it runs (``python x.py``, ``flowforge run x.py``).
_SCRIPT_MODULES = ("__main__", "__flowforge_target__")


def _call_of(fn: Any, task: str, folder: str) -> str:
    """``module:function`` for ``fn``, importable by a definition saved in ``folder``."""
    module = getattr(fn, "__module__", "") or ""
    qualname = getattr(fn, "__qualname__", "") or ""
    if "<locals>" in qualname:
        msg = (f"task {task!r}: its function is defined inside another function; define "
               "it at the top level of a module to export the workflow")
        raise WorkflowDefinitionError(msg, task=task)
    if module not in _SCRIPT_MODULES:
        return f"{module}:{qualname}"
    source = getattr(getattr(fn, "__code__", None), "co_filename", "")
    relative = os.path.relpath(os.path.abspath(source), folder) if source else ".."
    if relative.startswith("..") or not relative.endswith(".py"):
        msg = (f"task {task!r}: its function is in {source}, which a definition saved in "
               f"{folder} cannot import; save the export beside that file (or below it)")
        raise WorkflowDefinitionError(msg, task=task)
    return f"{relative[:-3].replace(os.sep, '.')}:{qualname}"


def _definition_entry(t: DefinitionTask, upstream: tuple[str, ...], wf: Workflow
                      ) -> dict[str, Any]:
    """The YAML entry a task loaded from a definition came from."""
    entry: dict[str, Any] = {"id": t.name}
    implied = references(t.args) | references(t.test or "")
    if t.loop is not None:  # its loop's names, not tasks: a dependency on such a task
        implied -= set(LOOP_NAMES)  # stays in depends_on
    if t.test is not None:
        entry.update({"type": "condition", "if": t.test, "then": t.then, "else": t.otherwise})
        implied |= set(upstream)
    else:
        entry["call"] = t.target
        if t.branch:
            entry["type"] = "branch"
        if t.args:
            entry["with"] = t.args
        if t.item_from:
            helper = wf.dag.tasks[t.item_from]
            assert isinstance(helper, DefinitionTask)
            entry["map"] = helper.args["items"]
            implied |= {t.item_from} | references(helper.args["items"])
    routed = {n for n, o in wf.dag.tasks.items() if isinstance(o, DefinitionTask)
              and t.name in (*o.then, *o.otherwise)}
    extra = sorted(set(upstream) - implied - routed)
    if extra:
        entry["depends_on"] = extra
    entry.update(_common_options(t))
    if isinstance(t.when, ExpressionCondition):
        entry["when"] = t.when.source
    return entry


def _common_options(t: Task) -> dict[str, Any]:
    """The YAML form of options a Python task and a definition's task share."""
    out: dict[str, Any] = {}
    if t.retries:
        out["retry"] = {"attempts": t.retries + 1, "delay": t.retry_delay, "backoff": t.backoff}
        if t.max_delay is not None:
            out["retry"]["max_delay"] = t.max_delay
    for key in ("timeout", "on_error"):
        if getattr(t, key) is not None:
            out[key] = getattr(t, key)
    if t.trigger != "all_success":
        out["trigger"] = t.trigger
    if t.on_failure is not None:
        fn = t.on_failure
        out["on_failure"] = {"call": f"{fn.__module__}:{fn.__qualname__}"}
    if t.tags:
        out["tags"] = list(t.tags)
    if t.rate_limit is not None:
        out["rate_limit"] = t.rate_limit.rate
    if t.resources is not None:
        r = t.resources
        out["resources"] = {k: v for k, v in (("cpus", r.cpus), ("memory", r.memory),
                                              ("gpus", r.gpus), ("gpu_memory", r.gpu_memory))
                            if v}
    if t.loop is not None:
        loop: dict[str, Any] = {"max_iterations": t.loop.max_iterations,
                                "on_exhausted": t.loop.on_exhausted}
        if isinstance(t.loop.until, ExpressionUntil):
            loop["until"] = t.loop.until.source
        elif t.loop.until is not None:
            msg = f"task {t.name!r}: its loop's until= is a Python callable, not an expression"
            raise WorkflowDefinitionError(msg, task=t.name)
        out["loop"] = loop
    return out


def _ids(wf: Workflow) -> dict[str, str]:
    return {t.name: f"t{i}_{re.sub(r'[^A-Za-z0-9_]', '_', t.name)}" for i, t in enumerate(wf.dag)}


def _quote(text: str) -> str:
    return json.dumps(text)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)

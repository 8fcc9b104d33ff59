"""A workflow's shape as data and pictures: ``to_dict``, Mermaid, Graphviz DOT, text."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workflow import Workflow

__all__ = ["to_dict", "to_dot", "to_mermaid", "to_text"]


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

"""Building a :class:`~flowforge.Workflow` from a definition file:
:func:`load_definition` reads it (:mod:`.schema`), checks every reference and makes its
tasks (:mod:`.tasktypes`), reporting each problem with its line."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from .._expressions import ExpressionError, check_constants, condition, references
from .._task import Loop, Task
from .._workflow import Workflow
from ..errors import WorkflowDefinitionError
from ..resources import ResourceLimits, Resources
from ..subflow import SubflowTask
from .schema import _check_schema, _read
from .tasktypes import (
    LOOP_NAMES,
    DefinitionTask,
    ExpressionCondition,
    ExpressionUntil,
    _import_target,
    _SharedFactory,
)

__all__ = ["load_definition"]


def load_definition(path: str) -> Workflow:
    """A workflow from a ``.yaml``/``.yml``/``.json`` file; WorkflowDefinitionError lists
    every problem with its line."""
    data, lines = _read(path)
    _check_schema(data, lines, path)
    folder = os.path.dirname(os.path.abspath(path))
    for entry in (folder, os.getcwd()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    params = data.get("params") or {}
    on_error = data.get("on_error")
    wf = Workflow(
        data["name"],
        executor=data.get("executor", "thread"),
        max_workers=data.get("max_workers"),
        params={k: v["default"] for k, v in params.items() if "default" in v},
        on_error=on_error if isinstance(on_error, str) else "fail_fast",
        limits=ResourceLimits(**data["limits"]) if data.get("limits") else None,
        rate_limits=data.get("rate_limits"),
        concurrency=data.get("concurrency"),
    )
    wf.param_types = {k: dict(v) for k, v in params.items()}
    wf.defined_in = os.path.abspath(path)  # its runs' key: this file, not the loader
    wf.definition = {"path": os.path.abspath(path), "schedule": data.get("schedule"),
                     "version": data.get("version"), "description": data.get("description")}
    shared = _fixtures_of(data, path, lines)
    for rname, spec in shared.items():
        wanted = sorted(_param_refs(spec.get("with", {})))
        wf.fixture(name=rname)(_SharedFactory(spec["call"], spec.get("with", {}), wanted))
    tasks = data["tasks"]
    ids = [t["id"] for t in tasks]
    problems: list[str] = []
    routed: dict[str, list[str]] = {}
    for t in tasks:
        for target in [*t.get("then", []), *t.get("else", [])]:
            routed.setdefault(target, []).append(t["id"])
    for i, t in enumerate(tasks):
        where = f"{path}:{lines.get(('tasks', i), '?')}"
        try:
            for made in _tasks_of(t, ids, set(params), routed.get(t["id"], []), folder,
                                  set(shared)):
                wf.add_task(made)
        except (WorkflowDefinitionError, ExpressionError) as exc:
            problems.append(f"{where}: task {t['id']!r}: {exc}")
    if isinstance(on_error, dict):
        try:
            handler = _import_target(on_error["call"], "on_error")
            wf.on_failure(handler)
        except WorkflowDefinitionError as exc:
            problems.append(f"{path}:{lines.get(('on_error',), '?')}: {exc}")
    if problems:
        raise WorkflowDefinitionError("\n".join(problems), path=path, problems=problems)
    try:
        wf.validate()
    except WorkflowDefinitionError as exc:
        task = getattr(exc, "task", None) or (getattr(exc, "cycle", None) or [None])[0]
        index = ids.index(task) if task in ids else None
        line = lines.get(("tasks", index), "?") if index is not None else "?"
        raise WorkflowDefinitionError(f"{path}:{line}: {exc}", path=path) from exc
    return wf


def _tasks_of(t: Mapping[str, Any], ids: list[str], params: set[str], routed_by: list[str],
              folder: str, shared: set[str]) -> list[Task]:
    kind = t.get("type", "task")
    name = t["id"]
    args = t.get("with") or {}
    reads = references(args)
    check_constants(args)  # one that reads nothing fails now, with the file and line
    if t.get("loop"):  # its with: reads the loop's own names, and they hide no task
        taken = sorted(reads & set(LOOP_NAMES) & set(ids))
        if taken:
            msg = (f"it loops, so ${{{taken[0]}}} in its with: is its loop's, yet a task is "
                   f"named {taken[0]!r} too: rename that task")
            raise WorkflowDefinitionError(msg, task=name)
        reads -= set(LOOP_NAMES)
    refs = (reads | references(t.get("if", "")) | references(t.get("map", ""))
            | references(t.get("when", "")))
    refs -= {"params", "item"}
    uses = tuple(sorted(refs & shared))
    refs -= shared
    unknown = sorted(refs - set(ids))
    if unknown:
        hint = ("only the with: of a looping task reads it" if unknown[0] in LOOP_NAMES
                else "write ${params.NAME} for a param")
        msg = f"${{{unknown[0]}}} refers to no task (its tasks: {', '.join(ids)}); {hint}"
        raise WorkflowDefinitionError(msg, task=name)
    until = (t.get("loop") or {}).get("until", "")
    for used in _param_refs(args, t.get("if", ""), t.get("map", ""), t.get("when", ""),
                            until) - params:
        msg = f"${{params.{used}}} names no param; declare it under params:"
        raise WorkflowDefinitionError(msg, task=name)
    depends = sorted(set(t.get("depends_on", [])) | refs | set(routed_by))
    options: dict[str, Any] = {"depends_on": depends}
    retry = t.get("retry")
    if retry:
        backoff = retry.get("backoff", "constant")
        options.update(retries=retry.get("attempts", 1) - 1,
                       retry_delay=float(retry.get("delay", 0.0)),
                       backoff={"exponential": 2.0, "constant": 1.0}.get(backoff, backoff))
        if "max_delay" in retry:
            options["max_delay"] = retry["max_delay"]
    for key in ("timeout", "trigger", "on_error"):
        if key in t:
            options[key] = t[key]
    if t.get("tags"):
        options["tags"] = t["tags"]
    if "when" in t:
        options["when"] = ExpressionCondition(t["when"], sorted(references(t["when"]) - {
            "params", "item"}))
    if "loop" in t:
        loop = t["loop"]
        options["loop"] = Loop(
            max_iterations=loop["max_iterations"],
            until=ExpressionUntil(loop["until"]) if "until" in loop else None,
            on_exhausted=loop.get("on_exhausted", "fail"),
        )
    if "resources" in t:
        options["resources"] = Resources(**t["resources"])
    if "rate_limit" in t:
        options["rate_limit"] = t["rate_limit"]
    if "on_failure" in t:
        options["on_failure"] = _import_target(t["on_failure"]["call"], name)
    if kind == "subflow":
        if "file" not in t:
            raise WorkflowDefinitionError("a subflow needs file:", task=name)
        inner = load_definition(os.path.join(folder, t["file"]))
        return [SubflowTask(inner, name, params=args, **options)]
    if kind == "condition":
        if "if" not in t:
            raise WorkflowDefinitionError("a condition needs if: (and then:/else:)", task=name)
        return [DefinitionTask(name, target=None, args={}, test=t["if"], then=t.get("then"),
                               otherwise=t.get("else"), branch=True, **options)]
    if "call" not in t:
        raise WorkflowDefinitionError("needs call: module:function", task=name)
    made: list[Task] = []
    if "map" in t:
        items = f"{name}.items"
        made.append(DefinitionTask(items, target=None, args={"items": t["map"]},
                                   depends_on=depends))
        options["map"] = items
        options["depends_on"] = [*depends, items]
        return [*made, DefinitionTask(name, target=t["call"], args=args, item_from=items,
                                      branch=kind == "branch", uses=uses, **options)]
    return [DefinitionTask(name, target=t["call"], args=args, branch=kind == "branch",
                           uses=uses, **options)]


def _param_refs(*values: Any) -> set[str]:
    """The params that the ``${...}`` expressions in ``values`` read (``params.x`` or
    ``params['x']``); text outside expressions is never looked at."""
    import ast

    from .._expressions import find

    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            for expr in [*find(value), *([condition(value)] if "${" in value else [])]:
                for node in ast.walk(expr.tree):
                    base = getattr(node, "value", None)
                    if isinstance(base, ast.Name) and base.id == "params":
                        if isinstance(node, ast.Attribute):
                            found.add(node.attr)
                        elif isinstance(node, ast.Subscript) and isinstance(
                            node.slice, ast.Constant
                        ):
                            found.add(str(node.slice.value))
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    for value in values:
        walk(value)
    return found


def _fixtures_of(data: Mapping[str, Any], path: str,
                 lines: Mapping[tuple[Any, ...], int]) -> dict[str, Any]:
    """The ``fixtures:`` section; ``shared:``, its name in the last release, is read too,
    with a warning (both at once is an error: which would win is not obvious)."""
    if "shared" not in data:
        return dict(data.get("fixtures") or {})
    where = f"{path}:{lines.get(('shared',), '?')}"
    if "fixtures" in data:
        msg = f"{where}: both fixtures: and shared: are given; keep fixtures: only"
        raise WorkflowDefinitionError(msg, path=path, field="shared")
    import warnings

    warnings.warn(f"{where}: shared: is now called fixtures: (same content)",
                  DeprecationWarning, stacklevel=3)
    return dict(data["shared"] or {})

"""Workflows written as YAML or JSON, pointing at Python functions (the ``yaml`` extra).

    name: etl
    params:
      source: {type: string, required: true}
    tasks:
      - id: extract
        call: mytasks:extract            # module:function, imported from beside the file
        with: {source: "${params.source}"}
      - id: transform
        call: mytasks:transform
        with: {rows: "${extract}"}       # a task's result; ${extract.key} for a field
        retry: {attempts: 3, delay: 1.0, backoff: exponential}

:func:`load_definition` checks the document against :data:`SCHEMA` (JSON Schema) and
every reference, and reports each problem with its line; :func:`to_yaml` writes a
Python workflow back out. Expressions are those of :mod:`flowforge._expressions`:
never ``eval``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._expressions import ExpressionError, condition, evaluate, references
from .errors import WorkflowDefinitionError
from .task import Task, TaskContext

if TYPE_CHECKING:
    from .workflow import Workflow

__all__ = ["SCHEMA", "DefinitionTask", "ExpressionCondition", "ExpressionUntil",
           "load_definition", "to_yaml"]

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
    "object": dict,
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "FlowForge workflow",
    "type": "object",
    "required": ["name", "tasks"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "version": {"type": ["string", "number"]},
        "description": {"type": "string"},
        "executor": {"enum": ["sequential", "thread", "process"]},
        "max_workers": {"type": "integer", "minimum": 1},
        "on_error": {"oneOf": [
            {"enum": ["fail_fast", "continue"]},
            {"type": "object", "required": ["call"], "additionalProperties": False,
             "properties": {"call": {"type": "string"}}},
        ]},
        "params": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "properties": {"type": {"enum": list(_TYPES)}, "required": {"type": "boolean"},
                           "default": {}, "description": {"type": "string"}},
        }},
        "schedule": {"type": "object", "additionalProperties": False, "required": ["cron"],
                     "properties": {"cron": {"type": "string"}, "timezone": {"type": "string"}}},
        "tasks": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id"], "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "type": {"enum": ["task", "condition", "branch", "subflow"]},
                "call": {"type": "string", "pattern": "^[A-Za-z_][\\w.]*:[A-Za-z_][\\w.]*$"},
                "with": {"type": "object"},
                "depends_on": {"type": "array", "items": {"type": "string"}},
                "retry": {"type": "object", "additionalProperties": False, "properties": {
                    "attempts": {"type": "integer", "minimum": 1},
                    "delay": {"type": "number", "minimum": 0},
                    "backoff": {"oneOf": [{"enum": ["exponential", "constant"]},
                                          {"type": "number", "minimum": 1}]},
                    "max_delay": {"type": "number", "minimum": 0}}},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "if": {"type": "string"},
                "then": {"type": "array", "items": {"type": "string"}},
                "else": {"type": "array", "items": {"type": "string"}},
                "map": {"oneOf": [
                    {"type": "string"},
                    {"type": "object", "minProperties": 1,
                     "additionalProperties": {"type": "string"}},
                ]},
                "file": {"type": "string"},
                "trigger": {"enum": ["all_success", "all_done", "one_success", "one_failed",
                                     "all_failed", "none_failed"]},
                "on_error": {"enum": ["continue", "fail_fast"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "when": {"type": "string"},
                "loop": {"type": "object", "required": ["max_iterations"],
                         "additionalProperties": False, "properties": {
                             "max_iterations": {"type": "integer", "minimum": 1},
                             "until": {"type": "string"},
                             "on_exhausted": {"enum": ["fail", "succeed"]}}},
                "resources": {"type": "object", "additionalProperties": False, "properties": {
                    "cpus": {"type": "number", "minimum": 0},
                    "memory": {"type": ["integer", "string"]},
                    "gpus": {"type": "number", "minimum": 0},
                    "gpu_memory": {"type": ["integer", "string"]}}},
                "rate_limit": {"type": "string"},
                "on_failure": {"type": "object", "required": ["call"],
                               "additionalProperties": False,
                               "properties": {"call": {"type": "string"}}},
            },
        }},
        "limits": {"type": "object", "additionalProperties": False, "properties": {
            "cpus": {"type": "number", "minimum": 0},
            "memory": {"type": ["integer", "string"]},
            "gpus": {"type": "integer", "minimum": 0},
            "max_concurrent_tasks": {"type": "integer", "minimum": 1}}},
        "rate_limits": {"type": "object", "additionalProperties": {"type": "string"}},
        "shared": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["call"], "additionalProperties": False,
            "properties": {"call": {"type": "string"}, "with": {"type": "object"}}}},
        "concurrency": {"type": "object", "additionalProperties": {"type": "integer",
                                                                  "minimum": 1}},
    },
}


class DefinitionTask(Task):
    """A task from a definition: evaluates its ``with:`` expressions against its
    upstream results and the params, then calls its function (or tests its ``if:``)."""

    def __init__(self, name: str, *, target: str | None, args: Mapping[str, Any],
                 test: str | None = None, then: list[str] | None = None,
                 otherwise: list[str] | None = None, item_from: str | None = None,
                 uses: tuple[str, ...] = (), **options: Any) -> None:
        super().__init__(name, None, **options)
        self.uses = tuple(uses)  # shared resources its expressions name
        self.target = target
        self.args = dict(args)
        self.test = test
        self.then = list(then or [])
        self.otherwise = list(otherwise or [])
        self.item_from = item_from
        self.function = _import_target(target, name) if target else None

    def run(self, ctx: TaskContext, **inputs: Any) -> Any:  # type: ignore[override]
        scope: dict[str, Any] = {**inputs, "params": dict(ctx.params)}
        if self.loop is not None:
            scope["iteration"], scope["previous"] = ctx.iteration, ctx.previous
        if self.item_from is not None:
            scope["item"] = inputs.pop(self.item_from)
            scope.pop(self.item_from, None)
        try:
            if self.test is not None:
                return self.then if condition(self.test).evaluate(scope) else self.otherwise
            if self.function is None:  # the items of a map: `map: "${...}"`
                items = evaluate(self.args["items"], scope)
                if isinstance(items, dict):  # lockstep: {x: "${a}", y: "${b}"}
                    columns = {k: list(v) for k, v in items.items()}
                    if len({len(c) for c in columns.values()}) > 1:
                        sizes = ", ".join(f"{k}: {len(c)}" for k, c in columns.items())
                        raise ExpressionError(f"lockstep map lengths differ ({sizes})")
                    return [dict(zip(columns, row, strict=True))
                            for row in zip(*columns.values(), strict=True)]
                return items
            return self.function(**evaluate(self.args, scope))
        except ExpressionError as exc:
            raise WorkflowDefinitionError(f"task {self.name!r}: {exc}", task=self.name) from None

    @property
    def callable(self) -> Any:
        """``run`` with a signature naming ``ctx`` and the shared resources it uses, so the
        engine binds them like a Python task's parameters."""
        return _BoundCall(self) if self.uses else self.run

    def fingerprint_parts(self) -> list[Any]:
        """What besides the class's code decides this task's result (see fingerprints)."""
        return [self.function, self.args, self.test, self.then, self.otherwise]


class _BoundCall:
    """A definition task's ``run`` as the engine sees it (see ``DefinitionTask.callable``)."""

    def __init__(self, task: DefinitionTask) -> None:
        import inspect

        self.task = task
        kw = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature([
            inspect.Parameter("ctx", kw),
            *(inspect.Parameter(n, kw) for n in task.uses),
            inspect.Parameter("inputs", inspect.Parameter.VAR_KEYWORD),
        ])

    def __call__(self, **kwargs: Any) -> Any:
        return self.task.run(**kwargs)


class _SharedFactory:
    """A YAML ``shared:`` resource: calls its function with its evaluated ``with:``."""

    def __init__(self, target: str, args: Mapping[str, Any], params: list[str]) -> None:
        import inspect

        self.target = target
        self.args = dict(args)
        kw = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature([inspect.Parameter(n, kw) for n in params])

    def __call__(self, **params: Any) -> Any:
        fn = _import_target(self.target, f"shared resource {self.target}")
        return fn(**evaluate(self.args, {"params": params}))


class ExpressionCondition:
    """A ``when:`` expression as a task condition: it takes the tasks it names (and
    ``ctx`` for the params), so the engine binds it like any condition."""

    def __init__(self, source: str, tasks: list[str]) -> None:
        import inspect

        self.source = source
        self.tasks = tasks
        kinds = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature(
            [inspect.Parameter("ctx", kinds), *(inspect.Parameter(n, kinds) for n in tasks)]
        )

    def __call__(self, ctx: TaskContext, **inputs: Any) -> bool:
        return bool(condition(self.source).evaluate({**inputs, "params": dict(ctx.params)}))


#: What a looping task's ``with:`` reads besides tasks and params.
LOOP_NAMES = ("previous", "iteration")


class ExpressionUntil:
    """A loop's ``until:`` expression. It reads ``${result}`` (the iteration's result),
    ``${iteration}`` (its number, from 0) and ``${params.NAME}``."""

    NAMES = ("result", "iteration", "params")

    def __init__(self, source: str) -> None:
        self.source = source
        self._expr = condition(source)
        unknown = sorted(self._expr.reads - set(self.NAMES))
        if unknown:
            msg = (
                f"loop until: ${{{unknown[0]}}} is not known there; it reads ${{result}}, "
                "${iteration} and ${params.NAME} (use a task's result through with: and "
                "return what until: needs)"
            )
            raise WorkflowDefinitionError(msg, option="until")

    def __call__(self, result: Any) -> bool:
        return self.scoped(result, None, {})

    def scoped(self, result: Any, iteration: int | None, params: Mapping[str, Any]) -> bool:
        """Whether the loop is done after ``iteration`` gave ``result``."""
        scope = {"result": result, "iteration": iteration, "params": dict(params)}
        return bool(self._expr.evaluate(scope))


def load_definition(path: str) -> Workflow:
    """A workflow from a ``.yaml``/``.yml``/``.json`` file; WorkflowDefinitionError lists
    every problem with its line."""
    from .workflow import Workflow

    data, lines = _read(path)
    _check_schema(data, lines, path)
    folder = os.path.dirname(os.path.abspath(path))
    for entry in (folder, os.getcwd()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    params = data.get("params") or {}
    on_error = data.get("on_error")
    from .resources import ResourceLimits

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
    wf.definition = {"path": os.path.abspath(path), "schedule": data.get("schedule"),
                     "version": data.get("version"), "description": data.get("description")}
    shared = data.get("shared") or {}
    for rname, spec in shared.items():
        wanted = sorted(_param_refs(spec.get("with", {})))
        wf.resource(name=rname)(_SharedFactory(spec["call"], spec.get("with", {}), wanted))
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
        from .task import Loop

        loop = t["loop"]
        options["loop"] = Loop(
            max_iterations=loop["max_iterations"],
            until=ExpressionUntil(loop["until"]) if "until" in loop else None,
            on_exhausted=loop.get("on_exhausted", "fail"),
        )
    if "resources" in t:
        from .resources import Resources

        options["resources"] = Resources(**t["resources"])
    if "rate_limit" in t:
        options["rate_limit"] = t["rate_limit"]
    if "on_failure" in t:
        options["on_failure"] = _import_target(t["on_failure"]["call"], name)
    if kind == "subflow":
        if "file" not in t:
            raise WorkflowDefinitionError("a subflow needs file:", task=name)
        from .subflow import SubflowTask

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

    from ._expressions import find

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


def _import_target(target: str, task: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        msg = f"cannot import {target!r} ({exc}); put {module}.py beside the file or install it"
        raise WorkflowDefinitionError(msg, task=task) from None
    return getattr(obj, "fn", None) or obj if isinstance(obj, Task) else obj


def check_params(wf: Workflow, params: Mapping[str, Any]) -> None:
    """Refuse a run whose params miss a required one or have the wrong type."""
    for name, spec in getattr(wf, "param_types", {}).items():
        if name not in params:
            if spec.get("required") and "default" not in spec:
                msg = f"workflow {wf.name!r} needs param {name!r} ({spec.get('type', 'any')})"
                raise WorkflowDefinitionError(msg, workflow=wf.name, parameter=name)
            continue
        kind = spec.get("type")
        value = params[name]
        ok = kind is None or (isinstance(value, _TYPES[kind])
                              and not (kind in ("integer", "number") and isinstance(value, bool)))
        if not ok:
            msg = (f"workflow {wf.name!r}: param {name!r} must be {kind}, got {value!r} "
                   f"({type(value).__name__})")
            raise WorkflowDefinitionError(msg, workflow=wf.name, parameter=name)


def _read(path: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise WorkflowDefinitionError(f"{path}: {exc.strerror}", path=path) from None
    if path.endswith(".json"):
        try:
            return json.loads(text), {}
        except ValueError as exc:
            raise WorkflowDefinitionError(f"{path}: not valid JSON ({exc})", path=path) from None
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise WorkflowDefinitionError(f"{path}{line}: not valid YAML ({exc})", path=path) from None
    lines: dict[tuple[Any, ...], int] = {}
    try:
        _lines(node, (), lines)
    except WorkflowDefinitionError as exc:
        raise WorkflowDefinitionError(f"{path}:{exc.message.removeprefix('line ')}",
                                      path=path) from None
    return data, lines


def _lines(node: Any, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    import yaml

    if node is None:
        return
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, _ in node.value:
            line = key.start_mark.line + 1
            if key.value in seen:
                where = ".".join(map(str, (*path, key.value)))
                msg = (f"line {line}: {where} is given twice (first on line "
                       f"{seen[key.value]}); keep one")
                raise WorkflowDefinitionError(msg)
            seen[key.value] = line
        for key, value in node.value:
            inner = path + (key.value,)
            _lines(value, inner, out)
            out[inner] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (i,), out)


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


def _check_schema(data: Any, lines: dict[tuple[Any, ...], int], path: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        where = tuple(error.absolute_path)
        line = next((lines[where[:n]] for n in range(len(where), -1, -1) if where[:n] in lines),
                    "?")
        field = ".".join(map(str, where)) or "(top)"
        problems.append(f"{path}:{line}: {field}: {error.message}")
    if problems:
        raise WorkflowDefinitionError("\n".join(problems), path=path, problems=problems)


def to_yaml(wf: Workflow) -> str:
    """A YAML definition of ``wf``; tasks must be module-level functions without Python
    conditions (``when=``) or loops, which YAML cannot name."""
    import yaml

    from ._binding import FROM_CONTEXT, FROM_PARAM, FROM_TASK

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
        module = getattr(t.fn, "__module__", "")
        qualname = getattr(t.fn, "__qualname__", "")
        if module == "__main__" or "<locals>" in qualname:
            msg = f"task {name!r}: its function must live in an importable module to export"
            raise WorkflowDefinitionError(msg, task=name)
        entry: dict[str, Any] = {"id": name, "call": f"{module}:{qualname}"}
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
    for rname, res in wf.shared_resources.items():
        if not isinstance(res.fn, _SharedFactory):
            msg = f"shared resource {rname!r} is a Python function; YAML cannot name it"
            raise WorkflowDefinitionError(msg, resource=rname)
        shared[rname] = {"call": res.fn.target, **({"with": res.fn.args} if res.fn.args else {})}
    if shared:
        doc["shared"] = shared
    meta = wf.definition or {}
    for key in ("version", "description", "schedule"):
        if meta.get(key) is not None:
            doc[key] = meta[key]
    return str(yaml.safe_dump(doc, sort_keys=False))

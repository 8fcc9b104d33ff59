"""The definition format: :data:`SCHEMA` (JSON Schema) and reading a file with the line
of each key, so that every problem can name its line."""

from __future__ import annotations

import json
from typing import Any

from ..errors import WorkflowDefinitionError

__all__ = ["SCHEMA"]

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
    "object": dict,
}

#: ``fixtures:``: named values tasks receive by parameter name, made by a ``call:``.
_FIXTURES: dict[str, Any] = {"type": "object", "additionalProperties": {
    "type": "object", "required": ["call"], "additionalProperties": False,
    "properties": {"call": {"type": "string"}, "with": {"type": "object"}}}}

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
        "fixtures": _FIXTURES,
        "shared": _FIXTURES,  # the last release's name of fixtures: still read
        "concurrency": {"type": "object", "additionalProperties": {"type": "integer",
                                                                  "minimum": 1}},
    },
}


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
        _check_expansion(node, path)  # before anything walks the aliases it repeats
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


#: Nodes a YAML definition may expand to through its aliases (``*name`` repeats what
#: ``&name`` marks): a few hundred bytes of nested aliases otherwise make gigabytes.
ALIAS_BUDGET = 10_000


def _check_expansion(node: Any, path: str) -> None:
    """Refuse a document whose aliases expand it beyond :data:`ALIAS_BUDGET` nodes,
    naming the line where it crosses it. Each node is sized once (memoised), so the
    check costs the document's size, not its expansion."""
    import yaml

    sizes: dict[int, int] = {}

    def size(n: Any) -> int:
        known = sizes.get(id(n))
        if known is not None:
            return known
        total = 1
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > ALIAS_BUDGET:
                line = child.start_mark.line + 1
                msg = (f"{path}:{line}: the YAML expands to more than {ALIAS_BUDGET:,} "
                       "values through its aliases (*name repeats what &name marks); "
                       "write the values out, or repeat less")
                raise WorkflowDefinitionError(msg, path=path)
        sizes[id(n)] = total
        return total

    if node is not None:
        size(node)


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

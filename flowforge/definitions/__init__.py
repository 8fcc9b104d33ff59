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
every reference, and reports each problem with its line; :func:`flowforge.export.to_yaml`
writes a Python workflow back out. Expressions are those of :mod:`flowforge._expressions`:
never ``eval``.

The modules, lowest first (each imports only those before it):

- :mod:`.schema`: the JSON Schema, and reading a file with the line of each key;
- :mod:`.tasktypes`: the tasks and conditions a definition builds;
- :mod:`.params`: checking a run's params against the declared types;
- :mod:`.loading`: :func:`load_definition`, the only one that builds a ``Workflow``.

This file imports none of them: the names below load on first use, so that
``flowforge.workflow`` can import :mod:`.params` without importing itself back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._private.lazy import lazy_names

if TYPE_CHECKING:
    from .loading import load_definition
    from .params import check_params
    from .schema import SCHEMA
    from .tasktypes import DefinitionTask, ExpressionCondition, ExpressionUntil

__all__ = ["SCHEMA", "DefinitionTask", "ExpressionCondition", "ExpressionUntil",
           "check_params", "load_definition"]

_WHERE = {
    "SCHEMA": "schema",
    "DefinitionTask": "tasktypes",
    "ExpressionCondition": "tasktypes",
    "ExpressionUntil": "tasktypes",
    "check_params": "params",
    "load_definition": "loading",
}

__getattr__ = lazy_names(__name__, _WHERE, globals())

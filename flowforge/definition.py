"""Deprecated: the definition code now lives in :mod:`flowforge.definitions` (``schema``,
``loading``, ``tasktypes``, ``params``) and ``to_yaml`` in :mod:`flowforge.export`.

This module only re-exports the old names, and warns. Nothing inside flowforge imports
it, so it closes no import cycle.
"""

from __future__ import annotations

import warnings

# The old names; private ones too (`x as x`), for code that reached into this module.
from .definitions.loading import _param_refs as _param_refs
from .definitions.loading import _tasks_of as _tasks_of
from .definitions.loading import load_definition
from .definitions.params import check_params
from .definitions.schema import _TYPES as _TYPES
from .definitions.schema import SCHEMA
from .definitions.schema import _check_schema as _check_schema
from .definitions.schema import _lines as _lines
from .definitions.schema import _read as _read
from .definitions.tasktypes import LOOP_NAMES as LOOP_NAMES
from .definitions.tasktypes import DefinitionTask, ExpressionCondition, ExpressionUntil
from .definitions.tasktypes import _BoundCall as _BoundCall
from .definitions.tasktypes import _import_target as _import_target
from .definitions.tasktypes import _SharedFactory as _SharedFactory
from .export import _common_options as _common_options
from .export import _definition_entry as _definition_entry
from .export import to_yaml

__all__ = ["SCHEMA", "DefinitionTask", "ExpressionCondition", "ExpressionUntil",
           "check_params", "load_definition", "to_yaml"]

warnings.warn(
    "flowforge.definition is deprecated: import load_definition, SCHEMA, DefinitionTask, "
    "ExpressionCondition, ExpressionUntil and check_params from flowforge.definitions "
    "(flowforge.definitions.loading, .schema, .tasktypes, .params), and to_yaml from "
    "flowforge.export",
    DeprecationWarning,
    stacklevel=2,
)

"""Checking a run's params against the types a definition declares under ``params:``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import WorkflowDefinitionError
from .schema import _TYPES

if TYPE_CHECKING:
    from .._workflow import Workflow

__all__ = ["check_params"]


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

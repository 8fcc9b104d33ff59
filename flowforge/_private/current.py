"""The workflow that a ``with workflow(...)`` block is defining, if any."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._workflow import Workflow

current_workflow: ContextVar[Workflow | None] = ContextVar("flowforge_workflow", default=None)

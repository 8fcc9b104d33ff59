"""The decorator DSL under its own name: ``from flowforge.dsl import workflow, task``."""

from __future__ import annotations

from .task import Task, TaskContext, task
from .workflow import Workflow, workflow

__all__ = ["Task", "TaskContext", "Workflow", "task", "workflow"]

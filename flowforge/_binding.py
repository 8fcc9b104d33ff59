"""How to call a task: a :class:`Binding` says, for each parameter, where its value
comes from (an upstream result, a run param, the context, a shared resource). Made by
``Workflow`` when it binds a definition, read by the engine when it starts a task; kept
apart from both so that ``import flowforge`` need not load the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .task import Task

__all__ = [
    "FROM_CONTEXT", "FROM_PARAM", "FROM_RESOURCE", "FROM_TASK", "Binding", "call_hook",
]

# Kinds of argument a task parameter can be bound to.
FROM_TASK = 0
FROM_PARAM = 1
FROM_CONTEXT = 2
FROM_RESOURCE = 3


@dataclass(slots=True)
class Binding:
    """How to call one task: its callable and where each argument comes from."""

    task: Task
    call: Callable[..., Any]
    args: tuple[tuple[str, int, str], ...]
    extra_inputs: tuple[str, ...]  # upstream results passed through **kwargs
    when: Callable[..., Any] | None = None  # the task's condition, bound like the task
    when_args: tuple[tuple[str, int, str], ...] = ()
    uses_resources: bool = False


def call_hook(hook: Callable[..., Any], arg: Any, what: str) -> None:
    """Call a user's failure hook in the driver; its own error is logged, never raised."""
    try:
        hook(arg)
    except Exception:
        import logging

        logging.getLogger("flowforge").exception("%s raised; the run goes on", what)

"""FlowForge: define, run and watch multi-step workflows in plain Python.

    from flowforge import workflow, task

    with workflow("etl", executor="process") as wf:
        @task
        def extract():
            return [1, 2, 3]

        @task(retries=3, retry_delay=0.5)
        def transform(extract):
            return [x * 2 for x in extract]

    result = wf.run()

Everything public is importable from here; the rest lives in ``_private`` modules.
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import TYPE_CHECKING

from ._private.lazy import lazy_names

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .bus import EventBus
    from .clock import Clock, SystemClock
    from .dag import DAG
    from .errors import (
        FlowForgeError,
        InvalidTransitionError,
        MemoryLimitExceeded,
        RemoteTaskError,
        ScheduleError,
        StateError,
        TaskError,
        TaskSerializationError,
        TaskTimeoutError,
        WorkerCrashedError,
        WorkflowDefinitionError,
        WorkflowFailedError,
        WorkflowLockedError,
        WorkflowTimeoutError,
    )
    from .executors.base import Executor
    from .executors.dask import DaskExecutor
    from .executors.process import ProcessExecutor
    from .executors.sequential import SequentialExecutor
    from .executors.thread import ThreadExecutor
    from .loading import load
    from .metrics import RunMetrics, TaskMetrics
    from .persistence import PersistenceManager, Plan, StateStore
    from .resources import RateLimit, ResourceLimits, Resources
    from .result import RunResult, TaskRun
    from .scheduler import Scheduler
    from .states import RunStatus, TaskState
    from .task import Loop, Task, TaskContext, branch, task
    from .workflow import Workflow, workflow

# Every public name loads on first use (PEP 562): ``import flowforge`` costs next to
# nothing, and a process worker, which imports only what the tasks it runs need, starts
# faster.
_WHERE = {
    "EventBus": "bus", "Clock": "clock", "SystemClock": "clock", "DAG": "dag",
    "Executor": "executors.base", "DaskExecutor": "executors.dask",
    "ProcessExecutor": "executors.process", "SequentialExecutor": "executors.sequential",
    "ThreadExecutor": "executors.thread", "load": "loading", "RunMetrics": "metrics",
    "TaskMetrics": "metrics", "PersistenceManager": "persistence", "Plan": "persistence",
    "StateStore": "persistence", "RateLimit": "resources", "ResourceLimits": "resources",
    "Resources": "resources", "RunResult": "result", "TaskRun": "result",
    "Scheduler": "scheduler", "RunStatus": "states", "TaskState": "states", "Loop": "task",
    "Task": "task", "TaskContext": "task", "branch": "task", "task": "task",
    "Workflow": "workflow", "workflow": "workflow",
}
_WHERE.update(dict.fromkeys([
    "FlowForgeError", "InvalidTransitionError", "MemoryLimitExceeded", "RemoteTaskError",
    "ScheduleError", "StateError", "TaskError", "TaskSerializationError", "TaskTimeoutError",
    "WorkerCrashedError", "WorkflowDefinitionError", "WorkflowFailedError",
    "WorkflowLockedError", "WorkflowTimeoutError",
], "errors"))
__getattr__ = lazy_names(__name__, _WHERE, globals())


class _Face(_types.ModuleType):
    """The package module: ``task`` and ``workflow`` stay the decorator and the context
    manager even once their submodules (of the same names) are imported."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("task", "workflow") and isinstance(value, _types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Face


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Clock",
    "DAG",
    "DaskExecutor",
    "EventBus",
    "Executor",
    "FlowForgeError",
    "InvalidTransitionError",
    "Loop",
    "MemoryLimitExceeded",
    "PersistenceManager",
    "Plan",
    "ProcessExecutor",
    "RateLimit",
    "RemoteTaskError",
    "ResourceLimits",
    "Resources",
    "RunMetrics",
    "RunResult",
    "RunStatus",
    "ScheduleError",
    "Scheduler",
    "SequentialExecutor",
    "StateError",
    "StateStore",
    "SystemClock",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskMetrics",
    "TaskRun",
    "TaskSerializationError",
    "TaskState",
    "TaskTimeoutError",
    "ThreadExecutor",
    "WorkerCrashedError",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowFailedError",
    "WorkflowLockedError",
    "WorkflowTimeoutError",
    "__version__",
    "branch",
    "load",
    "task",
    "workflow",
]

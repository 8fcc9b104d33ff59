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

from typing import TYPE_CHECKING

from ._private.lazy import lazy_names
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
from .executors.process import ProcessExecutor
from .executors.sequential import SequentialExecutor
from .executors.thread import ThreadExecutor
from .metrics import RunMetrics, TaskMetrics
from .resources import RateLimit, ResourceLimits, Resources
from .result import RunResult, TaskRun
from .states import RunStatus, TaskState
from .task import Loop, Task, TaskContext, branch, task
from .workflow import Workflow, workflow

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .executors.dask import DaskExecutor
    from .loading import load
    from .persistence import PersistenceManager, Plan, StateStore
    from .scheduler import Scheduler

# The heavier public names load on first use, keeping ``import flowforge`` light.
__getattr__ = lazy_names(
    __name__,
    {"PersistenceManager": "persistence", "Plan": "persistence", "StateStore": "persistence",
     "Scheduler": "scheduler", "load": "loading", "DaskExecutor": "executors.dask"},
    globals(),
)

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

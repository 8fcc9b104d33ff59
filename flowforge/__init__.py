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

What users write is importable from here (``__all__``). The submodules users import:

* ``flowforge.events``: the event classes to subscribe to (``wf.events.subscribe``);
* ``flowforge.errors``: the error classes (also importable from here);
* ``flowforge.executors``: the executors, the ``Executor`` interface and its Protocols;
* ``flowforge.testing``: a recording listener, a fake clock, an in-process runner;
* ``flowforge.persistence``: the persistence manager, state stores, resume plans;
* ``flowforge.scheduler``: the cron scheduler and its triggers.

Also public, for the less common needs they name: ``flowforge.states`` (task and run
states), ``flowforge.clock`` (write your own clock), ``flowforge.resources``,
``flowforge.dag`` (the classic ``DAG`` object), ``flowforge.result``,
``flowforge.metrics``, ``flowforge.bus``, ``flowforge.definitions`` (YAML and JSON),
``flowforge.export``, ``flowforge.subflow``, ``flowforge.listeners``, and the command line
and dashboard (``flowforge.cli``, ``flowforge.web``). Modules and packages whose names
start with ``_`` are internal and may change in any release.

Names that moved keep working with a ``DeprecationWarning`` naming their new place:
``flowforge.Clock`` (now ``flowforge.clock``), ``flowforge.ProcessExecutor``
(``flowforge.executors``), ``from flowforge.workflow import Workflow`` (``from flowforge
import Workflow``), ``flowforge.dsl``, and the others in ``_MOVED`` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._private.lazy import lazy_names
from ._private.moved import MovedModule, moved_names

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._task import Loop, Task, TaskContext, branch, task
    from ._workflow import Workflow, workflow
    from .dag import DAG
    from .errors import (
        FlowForgeError,
        InvalidTransitionError,
        MemoryLimitExceeded,
        RemoteTaskError,
        ScheduleError,
        StateError,
        TaskError,
        TaskExitError,
        TaskSerializationError,
        TaskTimeoutError,
        WorkerCrashedError,
        WorkflowDefinitionError,
        WorkflowFailedError,
        WorkflowLockedError,
        WorkflowTimeoutError,
    )
    from .executors.dask import DaskExecutor
    from .loading import load
    from .persistence import PersistenceManager
    from .resources import RateLimit, ResourceLimits, Resources
    from .result import RunResult
    from .scheduler import Scheduler
    from .states import RunStatus, TaskState

# Every public name loads on first use (PEP 562): ``import flowforge`` costs next to
# nothing, and a process worker, which imports only what the tasks it runs need, starts
# faster.
_WHERE = {
    "DAG": "dag", "DaskExecutor": "executors.dask", "load": "loading",
    "PersistenceManager": "persistence", "RateLimit": "resources",
    "ResourceLimits": "resources", "Resources": "resources", "RunResult": "result",
    "Scheduler": "scheduler", "RunStatus": "states", "TaskState": "states", "Loop": "_task",
    "Task": "_task", "TaskContext": "_task", "branch": "_task", "task": "_task",
    "Workflow": "_workflow", "workflow": "_workflow",
}
_WHERE.update(dict.fromkeys([
    "FlowForgeError", "InvalidTransitionError", "MemoryLimitExceeded", "RemoteTaskError",
    "ScheduleError", "StateError", "TaskError", "TaskExitError", "TaskSerializationError",
    "TaskTimeoutError",
    "WorkerCrashedError", "WorkflowDefinitionError", "WorkflowFailedError",
    "WorkflowLockedError", "WorkflowTimeoutError",
], "errors"))

#: Names this package exported before, and the module that holds each now.
_MOVED = {
    "Clock": "flowforge.clock", "SystemClock": "flowforge.clock", "EventBus": "flowforge.bus",
    "Executor": "flowforge.executors", "ProcessExecutor": "flowforge.executors",
    "SequentialExecutor": "flowforge.executors", "ThreadExecutor": "flowforge.executors",
    "Plan": "flowforge.persistence", "StateStore": "flowforge.persistence",
    "TaskRun": "flowforge.result", "RunMetrics": "flowforge.metrics",
    "TaskMetrics": "flowforge.metrics",
}
__getattr__ = moved_names(__name__, _MOVED, lazy_names(__name__, _WHERE, globals()))

# Module paths of the last release: ``flowforge.task`` and ``flowforge.workflow`` are the
# decorator and the context manager, so the modules behind them are private now.
MovedModule.register("flowforge.task", "flowforge",
                     ("Loop", "Task", "TaskContext", "branch", "task"))
MovedModule.register("flowforge.workflow", "flowforge", ("Workflow", "workflow"))
MovedModule.register("flowforge.dsl", "flowforge",
                     ("Task", "TaskContext", "Workflow", "task", "workflow"))


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DAG",
    "DaskExecutor",
    "FlowForgeError",
    "InvalidTransitionError",
    "Loop",
    "MemoryLimitExceeded",
    "PersistenceManager",
    "RateLimit",
    "RemoteTaskError",
    "ResourceLimits",
    "Resources",
    "RunResult",
    "RunStatus",
    "ScheduleError",
    "Scheduler",
    "StateError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskExitError",
    "TaskSerializationError",
    "TaskState",
    "TaskTimeoutError",
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

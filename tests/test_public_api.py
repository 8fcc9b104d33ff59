"""The package face: exactly the promised names, sorted, and a light import."""

from __future__ import annotations

import subprocess
import sys

import flowforge

#: What users write: the DSL and classic API, resources and limits, the scheduler, the
#: persistence manager, the Dask executor, the results and states they read, the errors.
PROMISED = {
    "DAG", "DaskExecutor", "FlowForgeError", "InvalidTransitionError", "Loop",
    "MemoryLimitExceeded", "PersistenceManager", "RateLimit", "RemoteTaskError",
    "ResourceLimits", "Resources", "RunResult", "RunStatus", "ScheduleError", "Scheduler",
    "StateError", "Task", "TaskContext", "TaskError", "TaskExitError", "TaskSerializationError",
    "TaskState",
    "TaskTimeoutError", "WorkerCrashedError", "Workflow", "WorkflowDefinitionError",
    "WorkflowFailedError", "WorkflowLockedError", "WorkflowTimeoutError", "__version__",
    "branch", "load", "task", "workflow",
}

#: Submodules users import, each named in the package docstring.
SUBMODULES = ["events", "errors", "executors", "testing", "persistence", "scheduler"]

#: Names the last release exported from the package, and where they live now.
MOVED = {
    "Clock": "flowforge.clock", "SystemClock": "flowforge.clock", "EventBus": "flowforge.bus",
    "Executor": "flowforge.executors", "ProcessExecutor": "flowforge.executors",
    "SequentialExecutor": "flowforge.executors", "ThreadExecutor": "flowforge.executors",
    "Plan": "flowforge.persistence", "StateStore": "flowforge.persistence",
    "TaskRun": "flowforge.result", "RunMetrics": "flowforge.metrics",
    "TaskMetrics": "flowforge.metrics",
}


def test_all_is_exactly_the_promise():
    """__all__ lists exactly the documented names, sorted, and each exists."""
    assert set(flowforge.__all__) == PROMISED
    assert flowforge.__all__ == sorted(flowforge.__all__)
    for name in flowforge.__all__:
        assert hasattr(flowforge, name)


def test_import_is_light():
    """import flowforge loads neither structlog, loky, cloudpickle, filelock nor sqlite3."""
    mods = ("('structlog', 'loky', 'cloudpickle', 'filelock', 'sqlite3', 'yaml', "
            "'flowforge.persistence.manager', 'flowforge._engine', 'flowforge._run')")
    code = f"import sys, flowforge; print(sorted(m for m in {mods} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_survive_pickling():
    """FlowForge errors keep their attributes across pickling."""
    import pickle

    err = flowforge.WorkerCrashedError("died", task="t", exitcode=3, signal=None)
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.task, back.exitcode) == ("died", "t", 3)


def test_invalid_transition_has_its_own_message():
    """An illegal state change names the task and why."""
    import pytest

    from flowforge.states import TaskState, check_transition

    with pytest.raises(flowforge.InvalidTransitionError, match="never runs again"):
        check_transition("t", TaskState.SUCCEEDED, TaskState.RUNNING)


def test_the_package_docstring_names_every_public_submodule():
    """Each submodule users import is named in the package docstring and imports."""
    import importlib

    for name in SUBMODULES:
        assert f"``flowforge.{name}``" in flowforge.__doc__
        importlib.import_module(f"flowforge.{name}")


def test_moved_names_still_work_with_a_warning_that_names_the_new_place():
    """Each name dropped from __all__ is still there, warns, and is the new one."""
    import importlib

    import pytest

    for name, where in MOVED.items():
        with pytest.warns(DeprecationWarning, match=f"import it from {where}"):
            old = getattr(flowforge, name)
        assert old is getattr(importlib.import_module(where), name)


def test_task_and_workflow_stay_the_decorator_and_the_context_manager():
    """The last release's module paths import with a warning, and never replace the
    package's task and workflow functions (no module subclass needed)."""
    import types

    import pytest

    with pytest.warns(DeprecationWarning, match="from flowforge import Workflow"):
        from flowforge.workflow import Workflow
    with pytest.warns(DeprecationWarning, match="from flowforge import TaskContext"):
        from flowforge.task import TaskContext
    with pytest.warns(DeprecationWarning):
        from flowforge.dsl import task as dsl_task
    assert Workflow is flowforge.Workflow and TaskContext is flowforge.TaskContext
    assert dsl_task is flowforge.task
    assert isinstance(flowforge.task, types.FunctionType)
    assert isinstance(flowforge.workflow, types.FunctionType)
    assert type(flowforge) is types.ModuleType

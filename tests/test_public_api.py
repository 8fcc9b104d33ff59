"""The package face: exactly the promised names, sorted, and a light import."""

from __future__ import annotations

import subprocess
import sys

import flowforge

PROMISED = {
    "DAG", "DaskExecutor", "Clock", "EventBus", "Executor", "FlowForgeError", "InvalidTransitionError",
    "Loop", "MemoryLimitExceeded", "PersistenceManager", "Plan", "ProcessExecutor", "RateLimit", "RemoteTaskError",
    "ResourceLimits", "Resources", "RunMetrics", "RunResult", "RunStatus", "ScheduleError",
    "Scheduler",
    "SequentialExecutor", "StateError", "StateStore", "SystemClock", "Task", "TaskContext", "TaskError",
    "TaskMetrics", "TaskRun", "TaskSerializationError", "TaskState", "TaskTimeoutError",
    "ThreadExecutor", "WorkerCrashedError", "Workflow", "WorkflowDefinitionError",
    "WorkflowFailedError", "WorkflowLockedError", "WorkflowTimeoutError", "__version__",
    "branch", "load", "task", "workflow",
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
            "'flowforge.persistence.manager', 'flowforge._engine')")
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

"""Every exception FlowForge raises on purpose, in one tree.

    FlowForgeError
    ├── WorkflowDefinitionError      bad definition, found before anything runs
    ├── InvalidTransitionError       a task or run state change the lifecycle forbids
    ├── WorkflowFailedError          raised by RunResult.raise_for_status()
    │   └── WorkflowTimeoutError     the run went past workflow(timeout=)
    ├── WorkflowLockedError          another live process runs this workflow on this state folder
    ├── StateError                   a state file that cannot be trusted or read
    ├── ScheduleError                a cron expression, time zone or time that cannot work
    └── TaskError                    one task attempt failed for a reason of FlowForge's own
        ├── TaskTimeoutError         the attempt ran past timeout=
        ├── MemoryLimitExceeded      the attempt's process used more memory than it asked
        ├── WorkerCrashedError       the worker process died under the attempt
        ├── TaskSerializationError   a function, input or result could not be pickled
        ├── RemoteTaskError          the task's own exception could not travel home
        └── TaskExitError            the task called sys.exit()

Exceptions carry their data as attributes and survive pickling across a process
boundary: ``__reduce__`` rebuilds them from the message plus the attribute dict.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FlowForgeError",
    "InvalidTransitionError",
    "MemoryLimitExceeded",
    "RemoteTaskError",
    "ScheduleError",
    "StateError",
    "TaskError",
    "TaskExitError",
    "TaskSerializationError",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "WorkflowDefinitionError",
    "WorkflowFailedError",
    "WorkflowLockedError",
    "WorkflowTimeoutError",
]


class FlowForgeError(Exception):
    """Base of every FlowForge exception; keyword fields become attributes."""

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if k != "message"}
        return (_rebuild, (type(self), self.message, state))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[FlowForgeError], message: str, state: dict[str, Any]) -> FlowForgeError:
    exc = cls.__new__(cls)
    FlowForgeError.__init__(exc, message, **state)
    return exc


class WorkflowDefinitionError(FlowForgeError, ValueError):
    """The workflow cannot run as written: a cycle, an unknown dependency, a name used
    twice, an unbound parameter or a task that is not callable. Raised before any task
    starts or any state is written. Attributes where they apply: ``workflow``, ``task``,
    ``parameter``, ``cycle`` (the task names on the cycle, in order, first repeated last).
    """


class InvalidTransitionError(FlowForgeError, RuntimeError):
    """A lifecycle moved from a state to one it may not reach (a FlowForge bug)."""


class WorkflowFailedError(FlowForgeError):
    """A run did not succeed; ``task`` names the first failed task and ``__cause__``
    is its error. ``run_id`` and ``status`` say which run."""


class WorkflowTimeoutError(WorkflowFailedError):
    """The whole run went past ``workflow(timeout=...)`` seconds."""


class WorkflowLockedError(FlowForgeError):
    """Another live process runs this workflow on this state folder (``pid``, ``path``)."""


class StateError(FlowForgeError):
    """A state file is corrupt, truncated, foreign or from a newer format (``path``)."""


class ScheduleError(FlowForgeError, ValueError):
    """A schedule that cannot work: a bad cron ``field`` (or one that never fires), an
    unknown time zone, a time without an offset. ``value`` is the bad value."""


class TaskError(FlowForgeError):
    """One attempt of task ``task`` failed for a reason of FlowForge's own."""


class TaskTimeoutError(TaskError, TimeoutError):
    """The attempt ran longer than its ``timeout`` (seconds)."""


class MemoryLimitExceeded(TaskError, MemoryError):
    """A task on the process executor used more memory than its ``Resources(memory=...)``
    allows (plus the margin); its worker was killed. ``limit`` and ``peak`` are bytes."""


class WorkerCrashedError(TaskError):
    """The worker process died while running the attempt: ``exitcode`` (negative for a
    signal) and ``signal`` (its name, or None). Retries count it like any failure."""


class TaskSerializationError(TaskError):
    """A task's function, inputs, result or exception could not be pickled for a process
    worker; ``what`` names the object at fault."""


class TaskExitError(TaskError):
    """The task called ``sys.exit()`` (raised ``SystemExit``): its attempt failed, and
    neither the driver nor a worker exited. ``exit_code`` is the code it gave;
    ``__cause__`` the ``SystemExit``. Retried only if ``retry_on`` names ``SystemExit``."""


class RemoteTaskError(TaskError):
    """The task raised an exception that could not be sent back from its worker (it could
    not be pickled or unpickled, or its ``str()`` failed). ``original_type`` names the
    original class; ``__cause__`` holds the worker's formatted traceback."""

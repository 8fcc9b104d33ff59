"""What a run tells at its start and its end: the ``WorkflowStarted`` fields, the run's
status, and the :class:`~flowforge.result.RunResult` with its ``WorkflowFinished``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._private.gcpause import paused_gc
from ..errors import StateError, WorkflowTimeoutError
from ..events import WorkflowFinished
from ..metrics import RunMetrics
from ..result import Results, RunResult, TaskRun
from ..states import RunStatus, TaskState
from .cancel import CancelToken, Stop

if TYPE_CHECKING:
    from ..persistence.session import RunSession
    from .recorder import Recorder

__all__ = ["run_status", "started_fields", "summarize"]


def started_fields(
    session: RunSession | None, resumed: bool, restored: int
) -> dict[str, Any]:
    """The resume-related fields of ``WorkflowStarted``."""
    return {
        "resumed": resumed,
        "restored": restored,
        "reasons": session.plan.reasons() if session is not None and resumed else {},
        "notes": () if session is None else tuple(session.plan.notes),
    }


def run_status(
    tasks: Mapping[str, TaskRun], token: CancelToken, first_error: BaseException | None
) -> RunStatus:
    """CANCELLED when cancelled; FAILED on a timeout, a failed save or any task that
    neither succeeded, was skipped, nor failed under ``on_error="continue"``."""
    if Stop.CANCEL in token:
        return RunStatus.CANCELLED
    if Stop.TIMEOUT in token or isinstance(first_error, StateError):
        return RunStatus.FAILED
    for rec in tasks.values():
        state = rec.state
        if state is TaskState.SUCCEEDED or state is TaskState.SKIPPED:
            continue
        if state is TaskState.FAILED and rec.tolerated:
            continue
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED


def summarize(
    *,
    workflow: str,
    run_id: str,
    tasks: dict[str, TaskRun],
    values: dict[str, Any],
    token: CancelToken,
    first_error: BaseException | None,
    timeout: float | None,
    peak: dict[str, float] | None,
    recorder: Recorder,
    session: RunSession | None,
    started: float,
    duration: float,
    publish: Callable[..., Any],
) -> RunResult:
    """Close the run: its status and error, its summary saved, ``WorkflowFinished``
    published; the :class:`RunResult` to return."""
    status = run_status(tasks, token, first_error)
    error = first_error
    if Stop.TIMEOUT in token:
        error = WorkflowTimeoutError(
            f"workflow {workflow!r} run {run_id} timed out after {timeout}s; raise "
            "workflow(timeout=...) or speed up its tasks",
            workflow=workflow, run_id=run_id, task=None, status=status.value,
        )
    with paused_gc():  # a record per task, none in a cycle: see _private/gcpause.py
        metrics = RunMetrics.from_tasks(tasks.values(), duration, peak)
        succeeded = [n for n, r in tasks.items() if r.state is TaskState.SUCCEEDED]
    counts = {
        "succeeded": metrics.succeeded, "failed": metrics.failed, "skipped": metrics.skipped,
        "cancelled": metrics.cancelled,
    }
    failed_save = recorder.finish(status.value, counts)
    if failed_save is not None and error is None:
        error = failed_save
    if isinstance(error, StateError):
        status = RunStatus.FAILED
    publish(
        WorkflowFinished, status=status.value, duration=duration,
        succeeded=metrics.succeeded, failed=metrics.failed, skipped=metrics.skipped,
        error=error, cancelled=metrics.cancelled,
        reason=token.reason if status is RunStatus.CANCELLED else "",
    )
    return RunResult(
        workflow=workflow, run_id=run_id, status=status,
        results=Results(values, succeeded, None if session is None else session.load),
        tasks=tasks, metrics=metrics, started=started, finished=started + duration,
        error=error, resumed=recorder.resumed,
    )

"""Every task's record in one run, and the one way to change its state.

:func:`move` is the only code that writes ``TaskRun.state``: it checks the move against
:data:`flowforge.states.ALLOWED` (an illegal one raises
:class:`~flowforge.errors.InvalidTransitionError` with its own message) and keeps the
record's counters with it: entering RUNNING counts an attempt and stamps the first start,
a final state stamps the end. Timestamps are wall-clock (``time.time()``): they are for
people and the saved run, never for deciding anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import time

from ..result import TaskRun
from ..states import ALLOWED, TaskState, check_transition

__all__ = ["move", "new_records"]

_RUNNING = TaskState.RUNNING
_PENDING = TaskState.PENDING
_FAILED = TaskState.FAILED
_NEXT = {state: ALLOWED.get(state, frozenset()) for state in TaskState}  # every key there


def new_records(names: Iterable[str]) -> dict[str, TaskRun]:
    """A PENDING record for each task of the run, in the graph's order."""
    return {n: TaskRun(n) for n in names}


def move(rec: TaskRun, new: TaskState, *, error: BaseException | None = None) -> None:
    """Move ``rec`` to ``new`` if that move is allowed, keeping its counters in step.

    RUNNING counts an attempt; FAILED keeps ``error`` (a failure before the start counts
    as the attempt it would have been); every final state stamps ``finished``."""
    old = rec.state
    if new not in _NEXT[old]:
        check_transition(rec.name, old, new)  # raises, naming the task and why not
    rec.state = new
    if new is _RUNNING:
        rec.attempts += 1
        if rec.started is None:
            rec.started = time()
    elif new is not _PENDING:
        rec.finished = time()
        if new is _FAILED:
            rec.error = error
            if old is _PENDING:  # failed before it could start
                rec.attempts += 1
                if rec.started is None:
                    rec.started = rec.finished

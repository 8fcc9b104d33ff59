"""A saved run's tasks as people read them: each task's state, and counts that add up.

A finished run's summary holds its counts. A running or interrupted run has none yet, so
they come from its journal, where each finished task has a record. A task with no record
is read by the run's status:

* in a finished run it is ``cancelled``: it never started, because the run stopped first;
* in a running run it is ``running`` once every upstream task has succeeded (it runs, or
  waits for a worker), else ``pending``;
* in an interrupted run (its process died) it is ``interrupted`` once every upstream
  task had succeeded (it was running, or about to, when the process died), else
  ``pending``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..states import RunStatus

__all__ = ["COUNTED", "counts", "task_states"]

#: The states a run's counts are named after, in the order they are shown.
COUNTED = ("succeeded", "failed", "cancelled", "skipped", "interrupted", "running", "pending")

_FINISHED = {RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value}


def task_states(
    status: str, order: Iterable[str], records: Mapping[str, Any],
    upstream: Mapping[str, Iterable[str]],
) -> dict[str, str]:
    """Every task's state in a run whose status is ``status`` (see the module
    docstring); ``records`` are the journal's, ``upstream`` its tasks' upstreams."""
    out: dict[str, str] = {}
    unfinished = "interrupted" if status == "interrupted" else "running"
    for name in order:
        rec = records.get(name)
        if rec is not None:
            out[name] = rec.state.value
        elif status in _FINISHED:
            out[name] = "cancelled"
        elif name in upstream and all(
            (up := records.get(u)) is not None and up.state.value == "succeeded"
            for u in upstream[name]
        ):
            out[name] = unfinished
        else:
            out[name] = "pending"
    return out


def counts(states: Mapping[str, str]) -> dict[str, int]:
    """``total`` and one count per state of :data:`COUNTED`."""
    out = {"total": len(states), **dict.fromkeys(COUNTED, 0)}
    for state in states.values():
        out[state] = out.get(state, 0) + 1
    return out

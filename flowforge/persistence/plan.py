"""What a run would do with each task: restore its saved result, or run it, and why.

``wf.plan()`` returns a :class:`Plan` before anything runs; a resumed run logs the same
reasons when it starts. A task is restored only if its saved result is trusted (it
succeeded, its code, options and params are unchanged, its result was pickled by this
Python and cloudpickle) and every task upstream of it is restored too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ..states import TaskState
from .records import TaskRecord

__all__ = ["Plan", "PlanEntry"]

RESTORE = "restore"
RUN = "run"


class PlanEntry(NamedTuple):
    """One task's fate: ``action`` is ``"restore"`` or ``"run"``; ``reason`` says why."""

    task: str
    action: str
    reason: str


class Plan:
    """The plan of a run: resume ``run_id`` (or start fresh) and an entry per task.

    ``plan["task"]`` is that task's :class:`PlanEntry`; ``entries`` has them all in
    topological order. Entries are made on demand: a resume of 100,000 tasks decides
    each task's fate but only spells out the ones that run."""

    def __init__(
        self,
        workflow: str,
        run_id: str | None,
        order: list[str],
        runs: dict[str, str],
        notes: list[str] | None = None,
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.notes = notes or []
        self._order = order
        self._runs = runs  # task -> why it runs; every other task is restored
        self._restored_reason = f"succeeded in run {run_id}"

    @property
    def resume(self) -> bool:
        """True when the run would resume ``run_id`` rather than start fresh."""
        return self.run_id is not None

    @property
    def restored(self) -> list[str]:
        runs = self._runs
        return [n for n in self._order if n not in runs]

    @property
    def to_run(self) -> list[str]:
        return list(self._runs)

    @property
    def entries(self) -> dict[str, PlanEntry]:
        return {n: self[n] for n in self._order}

    def reasons(self) -> dict[str, list[str]]:
        """Tasks that will run, grouped by why."""
        grouped: dict[str, list[str]] = {}
        for name, reason in self._runs.items():
            grouped.setdefault(reason, []).append(name)
        return grouped

    def __getitem__(self, task: str) -> PlanEntry:
        reason = self._runs.get(task)
        if reason is not None:
            return PlanEntry(task, RUN, reason)
        if task not in self._order:
            raise KeyError(f"workflow {self.workflow!r} has no task named {task!r}")
        return PlanEntry(task, RESTORE, self._restored_reason)

    def __str__(self) -> str:
        if self.run_id is None:
            head = f"workflow {self.workflow!r}: a fresh run of {len(self._order)} tasks"
        else:
            head = (
                f"workflow {self.workflow!r}: resume run {self.run_id}: "
                f"{len(self._order) - len(self._runs)} restored, {len(self._runs)} to run"
            )
        width = max((len(n) for n in self._order), default=4)
        lines = [head, *(f"  note: {n}" for n in self.notes)]
        for name in self._order:
            e = self[name]
            lines.append(f"  {name:<{width}}  {e.action:<7}  {e.reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Plan {self.workflow!r} run_id={self.run_id} "
            f"restore={len(self._order) - len(self._runs)} run={len(self._runs)}>"
        )


def make_plan(
    *,
    workflow: str,
    order: list[str],
    upstream: Mapping[str, tuple[str, ...]],
    fingerprints: Mapping[str, str],
    run_id: str | None,
    records: Mapping[str, TaskRecord],
    known: frozenset[str] | set[str],
    versions: Mapping[str, str],
    notes: list[str] | None = None,
    interrupted: bool = False,
) -> Plan:
    """Decide each task's fate, in topological order (so upstream decisions are known)."""
    if run_id is None:
        return Plan(workflow, None, order, dict.fromkeys(order, "new run"), notes)
    py, cp = versions.get("python", ""), versions.get("cloudpickle", "")
    runs: dict[str, str] = {}  # task -> why it runs
    get = records.get
    for name in order:
        rec = get(name)
        if (
            rec is not None
            and rec.saved
            and rec.fingerprint == fingerprints[name]
            and rec.python == py
            and rec.cloudpickle == cp
            and rec.state is TaskState.SUCCEEDED
        ):
            reason = None  # the common case of a resume, decided in one test
        elif rec is None and name in known and all(
            (before := get(u)) is not None and before.state is TaskState.SUCCEEDED
            for u in upstream[name]
        ):
            # Its upstreams were done: it ran when the process died, or the run stopped
            # (fail_fast, Ctrl-C) before it could start.
            reason = ("was running when the run stopped" if interrupted
                      else "never started: the run stopped first")
        else:
            reason = _own_reason(rec, name in known, fingerprints[name], py, cp)
        if reason is None:
            for up in upstream[name]:
                if up in runs:
                    reason = f"upstream {up!r} runs again"
                    break
        if reason is not None:
            runs[name] = reason
    return Plan(workflow, run_id, order, runs, notes)


def _own_reason(
    rec: TaskRecord | None, known: bool, fingerprint: str, py: str, cp: str
) -> str | None:
    if rec is None:
        return "not reached last time" if known else "new task"
    state = rec.state
    if state is TaskState.FAILED:
        return "failed last time" + (f" ({rec.error})" if rec.error else "")
    if state is TaskState.CANCELLED:
        return "cancelled last time"
    if state is TaskState.SKIPPED:
        return "not reached last time (skipped: an upstream failed)"
    if state is not TaskState.SUCCEEDED:
        return "not finished last time"
    if not rec.saved:
        return f"its result was not saved ({rec.note})"
    if rec.python != py or rec.cloudpickle != cp:
        return (
            f"its result was saved by Python {rec.python} / cloudpickle {rec.cloudpickle}, "
            f"this is Python {py} / cloudpickle {cp}"
        )
    code, _, params = fingerprint.partition("/")
    saved_code, _, saved_params = rec.fingerprint.partition("/")
    if code != saved_code:
        return "code or options changed"
    if params != saved_params:
        return "params changed"
    return None

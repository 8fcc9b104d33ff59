"""What a run would do with each task: restore its saved result, or run it, and why.

``wf.plan()`` returns a :class:`Plan` before anything runs; a resumed run logs the same
reasons when it starts. A task is restored only if its saved result is trusted (it
succeeded, its code, options and params are unchanged, its result was pickled by this
Python and cloudpickle) and every task upstream of it is restored too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..states import TaskState
from .records import TaskRecord

__all__ = ["Plan", "PlanEntry"]

RESTORE = "restore"
RUN = "run"


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One task's fate: ``action`` is ``"restore"`` or ``"run"``; ``reason`` says why."""

    task: str
    action: str
    reason: str


class Plan:
    """The plan of a run: resume ``run_id`` (or start fresh) and an entry per task."""

    def __init__(
        self,
        workflow: str,
        run_id: str | None,
        entries: dict[str, PlanEntry],
        notes: list[str] | None = None,
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.entries = entries
        self.notes = notes or []

    @property
    def resume(self) -> bool:
        """True when the run would resume ``run_id`` rather than start fresh."""
        return self.run_id is not None

    @property
    def restored(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.action == RESTORE]

    @property
    def to_run(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.action == RUN]

    def reasons(self) -> dict[str, list[str]]:
        """Tasks that will run, grouped by why."""
        grouped: dict[str, list[str]] = {}
        for name, e in self.entries.items():
            if e.action == RUN:
                grouped.setdefault(e.reason, []).append(name)
        return grouped

    def __getitem__(self, task: str) -> PlanEntry:
        return self.entries[task]

    def __str__(self) -> str:
        if self.run_id is None:
            head = f"workflow {self.workflow!r}: a fresh run of {len(self.entries)} tasks"
        else:
            head = (
                f"workflow {self.workflow!r}: resume run {self.run_id}: "
                f"{len(self.restored)} restored, {len(self.to_run)} to run"
            )
        width = max((len(n) for n in self.entries), default=4)
        lines = [head, *(f"  note: {n}" for n in self.notes)]
        lines += [f"  {n:<{width}}  {e.action:<7}  {e.reason}" for n, e in self.entries.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Plan {self.workflow!r} run_id={self.run_id} restore={len(self.restored)} "
            f"run={len(self.to_run)}>"
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
) -> Plan:
    """Decide each task's fate, in topological order (so upstream decisions are known)."""
    entries: dict[str, PlanEntry] = {}
    if run_id is None:
        for name in order:
            entries[name] = PlanEntry(name, RUN, "new run")
        return Plan(workflow, None, entries, notes)
    py, cp = versions.get("python", ""), versions.get("cloudpickle", "")
    for name in order:
        reason = _own_reason(records.get(name), name in known, fingerprints[name], py, cp)
        if reason is None:
            again = next((u for u in upstream[name] if entries[u].action == RUN), None)
            if again is not None:
                reason = f"upstream {again!r} runs again"
        if reason is None:
            entries[name] = PlanEntry(name, RESTORE, f"succeeded in run {run_id}")
        else:
            entries[name] = PlanEntry(name, RUN, reason)
    return Plan(workflow, run_id, entries, notes)


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

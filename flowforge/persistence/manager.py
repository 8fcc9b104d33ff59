"""The persistence manager: lists, loads and cleans saved runs, and records a live run.

:class:`PersistenceManager` is the user's handle on a state folder. Its ``begin()`` is
what ``Workflow.run()`` calls: it takes the workflow's lock, finds the run to resume,
decides what to restore (:mod:`.plan`) and returns a :class:`~.session.RunSession`,
which the engine calls as each task finishes and once at the end. Reading a journal back
is :mod:`.journal`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._private.gcpause import paused_gc
from ..errors import StateError
from ..states import RunStatus
from . import _frames
from .cancelling import CancelRequest, request_cancel
from .files import FileStore
from .journal import JournalState, load_result, read_journal
from .plan import Plan, make_plan
from .progress import counts, task_states
from .records import DB_FILE, MAPPED, RunInfo, TaskRecord
from .runkey import RunKey
from .session import RunSession
from .store import StateStore, UnreadableRun

if TYPE_CHECKING:
    pass

__all__ = [  # RunSession: see .session
    "PersistenceManager", "RunSession", "SavedRun", "folder_store",
]


def folder_store(state_dir: str | os.PathLike[str]) -> str:
    """The store kind a state folder holds: ``"sqlite"`` when its database is there,
    else ``"files"`` (what the CLI and the dashboard open an existing folder with)."""
    return "sqlite" if os.path.exists(os.path.join(state_dir, DB_FILE)) else "files"


def make_store(
    state_dir: str | os.PathLike[str], store: str | StateStore, durability: str
) -> StateStore:
    if isinstance(store, StateStore):
        return store
    if store == "files":
        return FileStore(state_dir, durability=durability)
    if store == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(state_dir, durability=durability)
    msg = f"state_store must be 'files', 'sqlite' or a StateStore, got {store!r}"
    raise ValueError(msg)


class SavedRun:
    """A saved run as :meth:`PersistenceManager.load` returns it: ``info``, the task
    records in ``tasks`` and, in ``results``, the saved results (unpickled on access)."""

    def __init__(
        self, info: RunInfo, tasks: dict[str, TaskRecord], results: Mapping[str, Any],
        known: frozenset[str] = frozenset(), states: Mapping[str, str] | None = None,
    ) -> None:
        self.info = info
        self.tasks = tasks
        self.results = results
        #: Every task of the run, finished or not (from the journal's headers).
        self.known = known | tasks.keys()
        #: Every task's state as people read it (see :mod:`.progress`), in run order.
        self.states: dict[str, str] = dict(states or {})

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def status(self) -> str:
        return self.info.status

    def __repr__(self) -> str:
        info = self.info
        return f"<SavedRun {info.workflow!r} {info.run_id} {info.status} tasks={len(self.tasks)}>"


class PersistenceManager:
    """Saved runs under ``state_dir``: list, load, delete and prune them.

    ``store`` is ``"files"`` (default), ``"sqlite"`` or a :class:`StateStore`;
    ``durability`` is ``"process"`` (default) or ``"fsync"`` (see the README).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] = "state",
        *,
        store: str | StateStore = "files",
        durability: str = "process",
    ) -> None:
        self.state_dir = os.fspath(state_dir)
        self.store = make_store(self.state_dir, store, durability)

    # -- the user's tools ------------------------------------------------------------

    def runs(
        self, workflow: str | None = None, *, unreadable: list[UnreadableRun] | None = None
    ) -> list[RunInfo]:
        """Saved runs (of ``workflow``), newest first. A run whose process died says
        ``interrupted``. A run whose summary cannot be read raises StateError, unless
        ``unreadable`` is a list: then it is reported there and the rest are listed."""
        found = self.store.list_runs(workflow, unreadable=unreadable)
        locked: dict[str, bool] = {}
        out = []
        for info in found:
            if info.status == RunStatus.RUNNING.value:
                if info.workflow not in locked:
                    locked[info.workflow] = self.store.is_locked(info.workflow)
                if not locked[info.workflow]:
                    info = replace(info, status="interrupted")
                info = self._with_progress(info)
            out.append(info)
        out.sort(key=lambda i: (i.started, i.run_id), reverse=True)
        return out

    def _with_progress(self, info: RunInfo) -> RunInfo:
        """A running or interrupted run's counts, from its journal (its summary has
        them only once it ends); an interrupted run ends at its last finished task."""
        try:
            journal = read_journal(self.store, info.workflow, info.run_id)
        except (StateError, OSError):
            return info  # listed as it is; loading it says what is wrong
        states = task_states(info.status, journal.known_order(), journal.records,
                             journal.upstream)
        got = counts(states)
        last = max((r.finished for r in journal.records.values() if r.finished), default=None)
        return replace(
            info, succeeded=got["succeeded"], failed=got["failed"], skipped=got["skipped"],
            cancelled=got["cancelled"], interrupted=got["interrupted"],
            finished=last if info.status == "interrupted" else None,
        )

    def load(self, run_id: str, workflow: str | None = None) -> SavedRun:
        """The saved state of ``run_id``: its info, task records and results."""
        info = self._find(run_id, workflow)
        journal = read_journal(self.store, info.workflow, run_id)
        slots = journal.slots
        units = journal.units
        store = self.store

        def load(name: str) -> Any:
            slot = slots[name]
            if slot[1] == MAPPED:
                items = units.get(name, {})
                return [
                    load_result(store, info.workflow, run_id, f"{name}[{i}]", items[i][0])
                    for i in range(int(slot[2] or 0))
                ]
            return load_result(store, info.workflow, run_id, name, slot)

        from ..result import Results

        names = [n for n, r in journal.records.items() if r.saved]
        if info.status in (RunStatus.RUNNING.value, "interrupted"):
            info = self._with_progress(info)
        states = task_states(info.status, journal.known_order(), journal.records,
                             journal.upstream)
        return SavedRun(info, journal.records, Results({}, names, load),
                        frozenset(journal.known), states)

    def request_cancel(
        self, run_id: str, request: CancelRequest, workflow: str | None = None
    ) -> RunInfo:
        """Ask the driver of ``run_id`` to cancel it (see
        :mod:`~flowforge.persistence.cancelling`); returns the run as it was asked.
        KeyError when the run is not known, ValueError when it is not running."""
        info = self._find(run_id, workflow)
        owner = self.store.owner(info.workflow)
        running = (info.status == RunStatus.RUNNING.value and owner is not None
                   and owner.get("run_id") == run_id and self.store.is_locked(info.workflow))
        if not running:
            status = info.status
            if status == RunStatus.RUNNING.value:
                status = "interrupted: the process that ran it is gone"
            msg = f"run {run_id} is not running (it is {status})"
            raise ValueError(msg)
        request_cancel(self.store, info.workflow, run_id, request)
        return info

    def wait_stopped(self, run_id: str, workflow: str, timeout: float) -> RunInfo:
        """Wait up to ``timeout`` seconds for ``run_id`` to stop running; its latest
        summary (still ``running`` if it did not stop in time)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._find(run_id, workflow)
            if info.status == "interrupted":  # its summary was read just before the run
                info = self._find(run_id, workflow)  # wrote it and let go of its lock
            stopped = info.status != RunStatus.RUNNING.value or not (
                self.store.is_locked(workflow)
            )
            if stopped or time.monotonic() >= deadline:
                return info
            time.sleep(0.05)

    def delete(self, run_id: str, workflow: str | None = None) -> None:
        """Remove a saved run; refuses a run that is running now."""
        info = self._find(run_id, workflow)
        if info.status == RunStatus.RUNNING.value:
            msg = (
                f"run {run_id} of workflow {info.workflow!r} is running now; stop it before "
                "deleting it"
            )
            raise StateError(msg, run_id=run_id)
        self.store.delete_run(info.workflow, run_id)

    def prune(self, keep: int, workflow: str | None = None) -> list[str]:
        """Keep the ``keep`` newest runs of each workflow, delete the rest; returns the
        deleted run ids. Running runs are never deleted."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            msg = f"prune(keep=...) takes a count of runs to keep (0 or more), got {keep!r}"
            raise ValueError(msg)
        by_workflow: dict[str, list[RunInfo]] = {}
        for info in self.runs(workflow):
            by_workflow.setdefault(info.workflow, []).append(info)
        deleted = []
        for infos in by_workflow.values():
            for info in infos[keep:]:
                if info.status == RunStatus.RUNNING.value:
                    continue
                self.store.delete_run(info.workflow, info.run_id)
                deleted.append(info.run_id)
        return deleted

    def _find(self, run_id: str, workflow: str | None) -> RunInfo:
        unreadable: list[UnreadableRun] = []
        for info in self.runs(workflow, unreadable=unreadable):
            if info.run_id == run_id:
                return info
        for bad in unreadable:  # another run's damaged summary does not hide this one
            if bad.run_id == run_id:
                raise StateError(bad.reason, path=bad.where, run_id=run_id)
        where = f" of workflow {workflow!r}" if workflow else ""
        msg = (
            f"no saved run {run_id!r}{where} in state folder {self.state_dir!r}; "
            "list them with .runs()"
        )
        raise KeyError(msg)

    # -- what Workflow.run() and Workflow.plan() use -----------------------------------

    def _resumable(
        self, workflow: str, key: RunKey | None, *, set_aside: bool = False
    ) -> tuple[RunInfo | None, list[str]]:
        """The newest run of ``workflow`` with run key ``key`` (None: any) if it did not
        succeed; and why a newer unfinished run of another key was not taken. A run
        whose summary is damaged is set aside (``set_aside``: moved to quarantine) so
        it blocks no later run; one signed with another key still stops the run."""
        bad: list[UnreadableRun] = []
        runs = self.store.list_runs(workflow, unreadable=bad)  # not-succeeded is enough
        notes = [self._set_aside(workflow, b.run_id, b.reason, b.problem, set_aside)
                 for b in bad]
        if not runs:
            return None, notes
        runs.sort(key=lambda i: (i.started, i.run_id), reverse=True)
        newest = runs[0]
        last = next((i for i in runs if key is None or key.matches(i)), None)
        if last is not None and last.status == RunStatus.SUCCEEDED.value:
            last = None
        why = None if key is None else key.differs_from(newest)
        if why is not None and last is None and newest.status != RunStatus.SUCCEEDED.value:
            # (one that resumes its own earlier run is no concern of the other's)
            notes.append(f"did not resume run {newest.run_id} ({newest.status}): {why}; "
                         "this run starts fresh")
        return last, notes

    def _decide(
        self, workflow: str, order: list[str], upstream: Mapping[str, tuple[str, ...]],
        fingerprints: Mapping[str, str], key: RunKey | None, *, resume: bool,
        set_aside: bool,
    ) -> tuple[RunInfo | None, Plan, JournalState | None]:
        """The run to resume (if any), the plan, and its journal read back. A damaged
        run is set aside (``set_aside``: moved to quarantine; else only said) and the
        plan is a fresh run's."""
        last, notes = (self._resumable(workflow, key, set_aside=set_aside) if resume
                       else (None, []))
        try:
            plan, journal = self._plan(workflow, order, upstream, fingerprints, last, notes)
        except StateError as exc:  # its journal is damaged
            if last is None or getattr(exc, "problem", None) != _frames.CORRUPT:
                raise
            notes.append(self._set_aside(workflow, last.run_id, str(exc), _frames.CORRUPT,
                                         set_aside))
            last = None
            plan, journal = self._plan(workflow, order, upstream, fingerprints, None, notes)
        return last, plan, journal

    def _set_aside(
        self, workflow: str, run_id: str, reason: str, problem: str | None, move: bool
    ) -> str:
        """Quarantine a damaged run (``move``), or say a run would; the note."""
        if problem == _frames.FOREIGN:  # another key signed it: tampering, stop here
            raise StateError(reason, run_id=run_id, problem=problem)
        if not move:
            return (f"run {run_id} is damaged ({reason}); the next run sets it aside and "
                    "starts fresh")
        where = self.store.quarantine(workflow, run_id, reason)
        if where is None:  # this store cannot: the damage stops the run, as it says
            raise StateError(reason, run_id=run_id, problem=problem)
        note = (f"run {run_id} was damaged ({reason}); it was set aside in {where} and "
                "this run starts fresh")
        import warnings

        warnings.warn(note, stacklevel=4)
        return note

    def plan(
        self,
        workflow: str,
        order: list[str],
        upstream: Mapping[str, tuple[str, ...]],
        fingerprints: Mapping[str, str],
        *,
        resume: bool,
        key: RunKey | None = None,
    ) -> Plan:
        """What a run of ``workflow`` with run key ``key`` would do now, read-only."""
        return self._decide(workflow, order, upstream, fingerprints, key, resume=resume,
                            set_aside=False)[1]

    def _plan(
        self,
        workflow: str,
        order: list[str],
        upstream: Mapping[str, tuple[str, ...]],
        fingerprints: Mapping[str, str],
        last: RunInfo | None,
        notes: list[str],
    ) -> tuple[Plan, JournalState | None]:
        journal = None
        if last is not None:
            journal = read_journal(self.store, workflow, last.run_id)
            if journal.torn:
                notes.append(
                    f"dropped a half-written record at the end of "
                    f"{self.store.where(workflow, last.run_id)} (the last run was killed "
                    "while saving it)"
                )
            now = _frames.current_versions()
            stale = {(r.python, r.cloudpickle) for r in journal.records.values() if r.saved}
            for py, cp in sorted(stale - {(now["python"], now["cloudpickle"])}):
                notes.append(
                    f"results saved by Python {py} / cloudpickle {cp} are not trusted under "
                    f"Python {now['python']} / cloudpickle {now['cloudpickle']}: "
                    "those tasks run again"
                )
        plan = make_plan(
            workflow=workflow,
            order=order,
            upstream=upstream,
            fingerprints=fingerprints,
            run_id=None if last is None else last.run_id,
            records={} if journal is None else journal.records,
            known=set() if journal is None else journal.known,
            versions=_frames.current_versions(),
            notes=notes,
            # still "running" although this process now holds the lock: its process died
            interrupted=last is not None and last.status == RunStatus.RUNNING.value,
        )
        return plan, journal

    def begin(
        self,
        workflow: str,
        order: list[str],
        upstream: Mapping[str, tuple[str, ...]],
        fingerprints: Mapping[str, str],
        *,
        resume: bool,
        new_run_id: Callable[[], str],
        job: str | None = None,
        target: str | None = None,
        params: Mapping[str, Any] | None = None,
        key: RunKey | None = None,
    ) -> RunSession:
        """Lock ``workflow``, plan the run (resuming the newest unfinished run with run
        key ``key``), and open its journal."""
        _frames.check_folder(self.state_dir)  # before anything is read from or written there
        stack = ExitStack()
        try:
            stack.enter_context(self.store.lock(workflow))
            with paused_gc():
                last, plan, journal = self._decide(
                    workflow, order, upstream, fingerprints, key, resume=resume,
                    set_aside=True)
                session = RunSession(
                    self.store, workflow, last, plan, journal, fingerprints, order, new_run_id,
                    stack, job, target, params, key, upstream,
                )
        except BaseException:
            stack.close()
            raise
        return session



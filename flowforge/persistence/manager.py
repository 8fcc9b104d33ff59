"""The persistence manager: lists, loads and cleans saved runs, and records a live run.

:class:`PersistenceManager` is the user's handle on a state folder. Its ``begin()`` is
what ``Workflow.run()`` calls: it takes the workflow's lock, finds the run to resume,
decides what to restore (:mod:`.plan`) and returns a :class:`RunSession`, which the engine
calls as each task finishes and once at the end.

A result is pickled with the standard pickler when it can be (plain data: the fastest
path, and the bytes cloudpickle would write) and with cloudpickle otherwise (lambdas,
functions and classes defined in ``__main__``). Results over ``BLOB_THRESHOLD`` bytes
go in a blob of their own, beside the journal.
"""

from __future__ import annotations

import marshal
import os
import pickle
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._private.gcpause import paused_gc
from ..errors import StateError
from ..states import RunStatus, TaskState
from . import _frames
from .files import FileStore
from .plan import Plan, make_plan
from .records import (
    BLOB,
    INLINE,
    MAPPED,
    NO_RESULT,
    TASK_ENVELOPE_AT,
    TASK_LENGTH,
    UNSAVED,
    RunInfo,
    TaskRecord,
    encode_task,
    record_from,
)
from .store import StateStore

HEADER_BYTE = ord("{")

if TYPE_CHECKING:
    from ..result import TaskRun

__all__ = ["PersistenceManager", "RunSession", "SavedRun"]

BLOB_THRESHOLD = 1 << 20

#: One task's place in a journal: (location, result kind, blob ref or note, result offset).
_Slot = tuple[Any, int, "str | None", int]


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
        self, info: RunInfo, tasks: dict[str, TaskRecord], results: Mapping[str, Any]
    ) -> None:
        self.info = info
        self.tasks = tasks
        self.results = results

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def status(self) -> str:
        return self.info.status

    def __repr__(self) -> str:
        info = self.info
        return f"<SavedRun {info.workflow!r} {info.run_id} {info.status} tasks={len(self.tasks)}>"


class _Journal:
    """A run's journal as read back: latest record and slot per task, and its headers."""

    def __init__(self) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.slots: dict[str, _Slot] = {}
        #: Per task, its saved map items or loop iterations: index -> (slot, record).
        self.units: dict[str, dict[int, tuple[_Slot, TaskRecord]]] = {}
        self.known: set[str] = set()
        self.frames = 0
        self.headers = 0
        self.torn = False
        self.scan: Any = None


def _read_journal(store: StateStore, workflow: str, run_id: str) -> _Journal:
    where = store.where(workflow, run_id)
    scan = store.read_journal(workflow, run_id)
    out = _Journal()
    out.scan = scan
    out.torn = scan.torn
    python = cloudpickle = ""
    records = out.records
    slots = out.slots
    loads = marshal.loads
    unpack = TASK_LENGTH.unpack_from
    frames = 0
    # The hot loop of a resume: 100,000 records must load in well under a second.
    for loc, payload in scan.entries:
        if payload[0] == HEADER_BYTE:
            head = _frames.read_header(payload, where)
            python = str(head.get("python", ""))
            cloudpickle = str(head.get("cloudpickle", ""))
            out.known.update(head.get("tasks", ()))
            out.headers += 1
            continue
        try:
            (n,) = unpack(payload, 1)
            offset = TASK_ENVELOPE_AT + n
            env = loads(payload[TASK_ENVELOPE_AT:offset])
            rec = record_from(env, python, cloudpickle)
        except Exception as exc:
            msg = (
                f"state file {where} holds a record this FlowForge cannot read ({exc}); "
                "run with fresh=True"
            )
            raise StateError(msg, path=where) from exc
        name = rec.name
        frames += 1
        index = env[10]
        if index >= 0:
            out.units.setdefault(name, {})[index] = ((loc, env[8], env[9], offset), rec)
            continue
        records[name] = rec
        slots[name] = (loc, env[8], env[9], offset)
    out.frames = frames
    return out


def _live(journal: _Journal) -> int:
    return len(journal.slots) + sum(len(u) for u in journal.units.values())


def _plain(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``params`` if they survive JSON unchanged (so a resume can reuse them), else None."""
    if not params:
        return None
    import json

    try:
        text = json.dumps(dict(params), sort_keys=True)
    except (TypeError, ValueError):
        return None
    return dict(params) if json.loads(text) == dict(params) else None


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


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

    def runs(self, workflow: str | None = None) -> list[RunInfo]:
        """Saved runs (of ``workflow``), newest first. A run whose process died says
        ``interrupted``."""
        found = self.store.list_runs(workflow)
        locked: dict[str, bool] = {}
        out = []
        for info in found:
            if info.status == RunStatus.RUNNING.value:
                if info.workflow not in locked:
                    locked[info.workflow] = self.store.is_locked(info.workflow)
                if not locked[info.workflow]:
                    info = replace(info, status="interrupted")
            out.append(info)
        out.sort(key=lambda i: (i.started, i.run_id), reverse=True)
        return out

    def load(self, run_id: str, workflow: str | None = None) -> SavedRun:
        """The saved state of ``run_id``: its info, task records and results."""
        info = self._find(run_id, workflow)
        journal = _read_journal(self.store, info.workflow, run_id)
        slots = journal.slots
        units = journal.units
        store = self.store

        def load(name: str) -> Any:
            slot = slots[name]
            if slot[1] == MAPPED:
                items = units.get(name, {})
                return [
                    _load_result(store, info.workflow, run_id, f"{name}[{i}]", items[i][0])
                    for i in range(int(slot[2] or 0))
                ]
            return _load_result(store, info.workflow, run_id, name, slot)

        from ..result import Results

        names = [n for n, r in journal.records.items() if r.saved]
        return SavedRun(info, journal.records, Results({}, names, load))

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
        for info in self.runs(workflow):
            if info.run_id == run_id:
                return info
        where = f" of workflow {workflow!r}" if workflow else ""
        msg = (
            f"no saved run {run_id!r}{where} in state folder {self.state_dir!r}; "
            "list them with .runs()"
        )
        raise KeyError(msg)

    # -- what Workflow.run() and Workflow.plan() use -----------------------------------

    def _resumable(self, workflow: str) -> RunInfo | None:
        """The workflow's newest run if it did not succeed."""
        runs = self.store.list_runs(workflow)  # no liveness check: not-succeeded is enough
        if not runs:
            return None
        last = max(runs, key=lambda i: (i.started, i.run_id))
        return last if last.status != RunStatus.SUCCEEDED.value else None

    def plan(
        self,
        workflow: str,
        order: list[str],
        upstream: Mapping[str, tuple[str, ...]],
        fingerprints: Mapping[str, str],
        *,
        resume: bool,
    ) -> Plan:
        """What a run of ``workflow`` would do now, read-only."""
        last = self._resumable(workflow) if resume else None
        return self._plan(workflow, order, upstream, fingerprints, last)[0]

    def _plan(
        self,
        workflow: str,
        order: list[str],
        upstream: Mapping[str, tuple[str, ...]],
        fingerprints: Mapping[str, str],
        last: RunInfo | None,
    ) -> tuple[Plan, _Journal | None]:
        journal = None
        notes: list[str] = []
        if last is not None:
            journal = _read_journal(self.store, workflow, last.run_id)
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
    ) -> RunSession:
        """Lock ``workflow``, plan the run, and open its journal."""
        stack = ExitStack()
        try:
            stack.enter_context(self.store.lock(workflow))
            with paused_gc():
                last = self._resumable(workflow) if resume else None
                plan, journal = self._plan(workflow, order, upstream, fingerprints, last)
                session = RunSession(
                    self.store, workflow, last, plan, journal, fingerprints, order, new_run_id,
                    stack, job, target, params,
                )
        except BaseException:
            stack.close()
            raise
        return session


class RunSession:
    """One live run's link to its store: the engine's recorder.

    The engine calls :meth:`succeeded` and :meth:`ended` as tasks finish (before their
    events are published, so a task reported finished is saved), :meth:`load` for a
    result it let go of, and :meth:`finish` once.
    """

    def __init__(
        self,
        store: StateStore,
        workflow: str,
        last: RunInfo | None,
        plan: Plan,
        journal: _Journal | None,
        fingerprints: Mapping[str, str],
        order: list[str],
        new_run_id: Callable[[], str],
        stack: ExitStack,
        job: str | None = None,
        target: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.plan = plan
        self.resumed = last is not None
        self.run_id = last.run_id if last is not None else new_run_id()
        self._fingerprints = fingerprints
        self._stack = stack
        self._slots: dict[str, _Slot] = {}
        self._units: dict[str, dict[int, tuple[_Slot, TaskRecord]]] = {}
        self._dead = 0  # superseded records in the journal: compaction's trigger
        self.restored: dict[str, TaskRecord] = {}
        if journal is not None:
            records = journal.records
            self.restored = {n: records[n] for n in plan.restored}
            # Tasks that run again replace their old slot when they finish; until then
            # nothing asks for their result (only finished upstreams are loaded).
            self._slots = journal.slots
            self._units = journal.units
            self._dead = journal.frames - _live(journal)
        self._started = time.time() if last is None else last.started
        self._info = RunInfo(
            workflow=workflow,
            run_id=self.run_id,
            status=RunStatus.RUNNING.value,
            started=self._started,
            total=len(order),
            restored=len(self.restored),
            resumes=0 if last is None else last.resumes + 1,
            store=store.kind,
            job=job,
            target=target,
            params=_plain(params),
        )
        self._where = store.where(workflow, self.run_id)
        try:
            store.note_owner(workflow, self.run_id)
        except OSError:
            pass  # the note only helps other processes name or cancel this run
        self._failed: StateError | None = None
        try:
            store.write_run(self._info)
            self._journal = store.open_journal(
                workflow, self.run_id, None if journal is None else journal.scan
            )
            self._journal.append(_frames.header(workflow=workflow, run_id=self.run_id, tasks=order))
        except OSError as exc:
            raise self._save_error("start the run", exc) from exc

    # -- called by the engine --------------------------------------------------------

    def succeeded(self, rec: TaskRun, value: Any) -> bool:
        """Save a success; True when its result can be loaded back (so may be dropped)."""
        slot = self._save_value(
            rec.name, -1, rec.attempts, rec.started, rec.finished, rec.duration, value,
            f"save the result of task {rec.name!r}",
        )
        self._note_slot(rec.name, slot)
        return slot[1] != UNSAVED

    def _save_value(
        self, name: str, index: int, attempts: int, started: float | None,
        finished: float | None, duration: float | None, value: Any, what: str,
        *, fingerprint: str | None = None,
    ) -> _Slot:
        """Pickle ``value`` (inline, or as a blob when large) into a record of ``name``
        (``index`` >= 0: one of its items); the record's slot."""
        kind = INLINE
        extra: str | None = None
        try:
            data = _dumps(value)
        except Exception as exc:
            kind, extra, data = UNSAVED, f"could not pickle it: {type(exc).__name__}: {exc}", b""
        try:
            if len(data) > BLOB_THRESHOLD:
                extra = self.store.put_blob(self.workflow, self.run_id, data)
                kind, data = BLOB, b""
            payload = encode_task(
                name, TaskState.SUCCEEDED, attempts, started, finished, duration,
                self._fingerprints[name] if fingerprint is None else fingerprint, None, kind,
                extra, data, index=index,
            )
            loc = self._journal.append(payload)
        except OSError as exc:
            raise self._save_error(what, exc) from exc
        return (loc, kind, extra, len(payload) - len(data))

    def mapped_succeeded(self, rec: TaskRun, count: int) -> bool:
        """Save a mapped task's success: its result is its ``count`` items' records. False
        (and a record saying why) when an item's result could not be saved."""
        units = self._units.get(rec.name, {})
        missing = next(
            (i for i in range(count) if i not in units or units[i][0][1] not in (INLINE, BLOB)),
            None,
        )
        kind, extra = MAPPED, str(count)
        if missing is not None:
            kind, extra = UNSAVED, f"its item {missing} could not be saved"
        payload = encode_task(
            rec.name, TaskState.SUCCEEDED, rec.attempts, rec.started, rec.finished,
            rec.duration, self._fingerprints[rec.name], None, kind, extra,
        )
        try:
            loc = self._journal.append(payload)
        except OSError as exc:
            raise self._save_error(f"save the result of task {rec.name!r}", exc) from exc
        self._note_slot(rec.name, (loc, kind, extra, len(payload)))
        return kind == MAPPED

    def unit_succeeded(
        self, name: str, index: int, attempts: int, started: float, duration: float,
        value: Any, inputs: str,
    ) -> None:
        """Save one map item's (or loop iteration's) result as soon as it is there;
        ``inputs`` identifies the upstream results it came from."""
        now = time.time()
        fingerprint = f"{self._fingerprints[name]}#{inputs}"
        slot = self._save_value(
            name, index, attempts, started, now, duration, value,
            f"save item {index} of task {name!r}", fingerprint=fingerprint,
        )
        units = self._units.setdefault(name, {})
        if index in units:
            self._dead += 1
        units[index] = (slot, _unit_record(name, attempts, started, now, duration, slot[1],
                                           slot[2], fingerprint))

    def saved_units(self, name: str, inputs: str) -> dict[int, Any]:
        """Items (iterations) of ``name`` saved earlier in this run from the same upstream
        results (``inputs``) and unchanged code: index -> anything ``load_unit`` takes."""
        fingerprint = f"{self._fingerprints[name]}#{inputs}"
        now = _frames.current_versions()
        versions = (now["python"], now["cloudpickle"])
        return {
            i: slot
            for i, (slot, rec) in self._units.get(name, {}).items()
            if rec.saved and rec.fingerprint == fingerprint
            and (rec.python, rec.cloudpickle) == versions
        }

    def load_unit(self, name: str, index: int) -> Any:
        found = self._units.get(name, {}).get(index)
        if found is None or found[0][1] not in (INLINE, BLOB):
            msg = f"item {index} of task {name!r} has no saved result in {self._where}"
            raise StateError(msg, path=self._where, task=name)
        return _load_result(self.store, self.workflow, self.run_id, f"{name}[{index}]", found[0])

    def ended(self, rec: TaskRun) -> None:
        """Save a task that failed, was skipped or was cancelled."""
        error = None if rec.error is None else f"{type(rec.error).__name__}: {rec.error}"
        payload = encode_task(
            rec.name, rec.state, rec.attempts, rec.started, rec.finished, rec.duration,
            self._fingerprints[rec.name], error, NO_RESULT, None,
        )
        try:
            loc = self._journal.append(payload)
        except OSError as exc:
            raise self._save_error(f"save the outcome of task {rec.name!r}", exc) from exc
        self._note_slot(rec.name, (loc, NO_RESULT, None, len(payload)))

    def load(self, name: str) -> Any:
        """A saved result, unpickled; KeyError if none was saved."""
        slot = self._slots.get(name)
        if slot is None or slot[1] not in (INLINE, BLOB, MAPPED):
            raise KeyError(name)
        try:
            if slot[1] == MAPPED:
                return [self.load_unit(name, i) for i in range(int(slot[2] or 0))]
            return _load_result(self.store, self.workflow, self.run_id, name, slot)
        except StateError as exc:
            self._invalidate(name, str(exc))
            raise

    def _invalidate(self, name: str, why: str) -> None:
        """Mark a saved result unusable, so the next run computes it again."""
        rec = self.restored.get(name)
        if rec is None or self._failed is not None:
            return
        payload = encode_task(
            name, TaskState.SUCCEEDED, rec.attempts, rec.started, rec.finished, rec.duration,
            self._fingerprints[name], None, UNSAVED, f"it could not be loaded back: {why}",
        )
        try:
            loc = self._journal.append(payload)
        except OSError:
            return  # the caller reports the load failure itself
        self._note_slot(name, (loc, UNSAVED, None, len(payload)))

    def finish(self, *, status: str, counts: Mapping[str, int]) -> None:
        """Write the run's final summary, compact the journal, release the lock."""
        try:
            self._journal.close()
            if self._failed is None:
                if self._dead and self._dead * 4 >= len(self._slots):
                    self._compact()
                self._info = replace(
                    self._info,
                    status=status,
                    finished=time.time(),
                    succeeded=counts.get("succeeded", 0),
                    failed=counts.get("failed", 0),
                    skipped=counts.get("skipped", 0),
                    cancelled=counts.get("cancelled", 0),
                )
                self.store.write_run(self._info)
        except OSError as exc:
            raise self._save_error("save the run's final state", exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Release the lock and the store (idempotent); used on every way out. Results can
        still be loaded afterwards: the store reopens on demand."""
        self._stack.close()
        self.store.close()

    # -- inside ----------------------------------------------------------------------

    def _note_slot(self, name: str, slot: _Slot) -> None:
        if name in self._slots:
            self._dead += 1
        self._slots[name] = slot

    def _compact(self) -> None:
        """Rewrite the journal with the live records only: one per task, plus the items
        of mapped tasks (their result) and of tasks not finished yet (for a resume)."""
        journal = _read_journal(self.store, self.workflow, self.run_id)
        payload_at = {loc: bytes(p) for loc, p in journal.scan.entries}
        # (python, cloudpickle) -> [(task, index, slot)]; index -1 is the task's own record
        groups: dict[tuple[str, str], list[tuple[str, int, _Slot]]] = {}
        for name, rec in journal.records.items():
            groups.setdefault((rec.python, rec.cloudpickle), []).append(
                (name, -1, journal.slots[name])
            )
        for name, items in journal.units.items():
            own = journal.records.get(name)
            done = own is not None and own.state is TaskState.SUCCEEDED
            if done and journal.slots[name][1] != MAPPED:
                continue  # a finished loop: its iterations are history
            for index, (slot, unit) in items.items():
                groups.setdefault((unit.python, unit.cloudpickle), []).append(
                    (name, index, slot)
                )
        payloads: list[bytes] = []
        kept: list[tuple[str, int, _Slot]] = []
        for (py, cp), group in groups.items():
            versions = {"python": py, "cloudpickle": cp}
            payloads.append(
                _frames.header(versions=versions, workflow=self.workflow, run_id=self.run_id)
            )
            for entry in group:
                payloads.append(payload_at[entry[2][0]])
                kept.append(entry)
        locations = self.store.rewrite_journal(self.workflow, self.run_id, payloads)
        record_locs = [
            loc for loc, p in zip(locations, payloads, strict=True) if not _frames.is_header(p)
        ]
        units: dict[str, dict[int, tuple[_Slot, TaskRecord]]] = {}
        for (name, index, (_, kind, extra, offset)), loc in zip(kept, record_locs, strict=True):
            if index < 0:
                self._slots[name] = (loc, kind, extra, offset)
            else:
                unit = journal.units[name][index][1]
                units.setdefault(name, {})[index] = ((loc, kind, extra, offset), unit)
        self._units = units
        self._dead = 0

    def _save_error(self, what: str, exc: OSError) -> StateError:
        reason = exc.strerror or str(exc)
        msg = (
            f"cannot {what} in {self._where}: {reason}; the run stops here and loses nothing "
            "saved so far. Free disk space (or fix the folder's permissions) and run again "
            "to resume, or run with autosave=False"
        )
        err = StateError(msg, path=self._where, errno=exc.errno)
        self._failed = err
        return err


def _unit_record(
    name: str, attempts: int, started: float, finished: float, duration: float, kind: int,
    extra: str | None, fingerprint: str,
) -> TaskRecord:
    now = _frames.current_versions()
    return TaskRecord(
        name, TaskState.SUCCEEDED, attempts, started, finished, duration, fingerprint, None,
        kind in (INLINE, BLOB), extra if kind == UNSAVED else None, now["python"],
        now["cloudpickle"],
    )


def _load_result(store: StateStore, workflow: str, run_id: str, name: str, slot: _Slot) -> Any:
    loc, kind, extra, offset = slot
    where = store.where(workflow, run_id)
    if kind == BLOB:
        assert extra is not None
        data: bytes | memoryview = store.read_blob(workflow, run_id, extra)
    elif kind == INLINE:
        data = store.read_payload(workflow, run_id, loc)[offset:]
    else:
        msg = f"task {name!r} has no saved result in {where}"
        raise StateError(msg, path=where, task=name)
    try:
        return pickle.loads(data)
    except Exception as exc:
        msg = (
            f"cannot load the saved result of task {name!r} from {where}: "
            f"{type(exc).__name__}: {exc}; run with fresh=True to compute it again"
        )
        raise StateError(msg, path=where, task=name) from exc

"""A live run's link to its store: what the engine calls as tasks finish.

:meth:`PersistenceManager.begin <flowforge.persistence.manager.PersistenceManager.begin>`
makes one per run, holding the workflow's lock for as long as it lives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._resultfiles import Handle, header_digest, materialize
from ..errors import StateError
from ..states import RunStatus, TaskState
from . import _frames
from .journal import (
    BLOB_THRESHOLD,
    JournalEntry,
    JournalState,
    dumps,
    live_records,
    load_result,
    read_journal,
    unit_record,
    upstream_record,
)
from .plan import Plan
from .records import (
    BLOB,
    INLINE,
    LOADABLE,
    MAPPED,
    NO_RESULT,
    RESULT_FILE,
    UNSAVED,
    RunInfo,
    TaskRecord,
    encode_task,
)
from .store import StateStore

if TYPE_CHECKING:
    from ..result import TaskRun
    from .runkey import RunKey

__all__ = ["RunSession"]


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
        journal: JournalState | None,
        fingerprints: Mapping[str, str],
        order: list[str],
        new_run_id: Callable[[], str],
        stack: ExitStack,
        job: str | None = None,
        target: str | None = None,
        params: Mapping[str, Any] | None = None,
        key: RunKey | None = None,
        upstream: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.plan = plan
        self.resumed = last is not None
        self.run_id = last.run_id if last is not None else new_run_id()
        self._fingerprints = fingerprints
        self._stack = stack
        self._slots: dict[str, JournalEntry] = {}
        self._units: dict[str, dict[int, tuple[JournalEntry, TaskRecord]]] = {}
        self._dead = 0  # superseded records in the journal: compaction's trigger
        self.restored: dict[str, TaskRecord] = {}
        if journal is not None:
            records = journal.records
            self.restored = {n: records[n] for n in plan.restored}
            # Tasks that run again replace their old slot when they finish; until then
            # nothing asks for their result (only finished upstreams are loaded).
            self._slots = journal.slots
            self._units = journal.units
            self._dead = journal.frames - live_records(journal)
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
            defined_in=None if key is None else key.defined_in,
            params_digest=None if key is None else key.params_digest,
            scheduled_for=None if key is None else key.scheduled_for,
        )
        self._where = store.where(workflow, self.run_id)
        try:
            store.note_owner(workflow, self.run_id)
        except OSError:
            pass  # the note only helps other processes name or cancel this run
        self._failed: StateError | None = None
        self._result_folder: str | None = None
        try:
            store.write_run(self._info)
            self._journal = store.open_journal(
                workflow, self.run_id, None if journal is None else journal.scan
            )
            self._journal.append(_frames.header(workflow=workflow, run_id=self.run_id,
                                                tasks=order))
            if upstream is not None:  # what was ready, for a run read back (progress.py)
                self._journal.append(upstream_record(order, upstream))
        except OSError as exc:
            raise self._save_error("start the run", exc) from exc

    # -- called by the engine --------------------------------------------------------

    def succeeded(self, rec: TaskRun, value: Any) -> bool:
        """Save a success; True when its result can be loaded back (so may be dropped).
        A loop's own record holds its result: its last iteration's large one goes."""
        slot = self._save_value(
            rec.name, -1, rec.attempts, rec.started, rec.finished, rec.duration, value,
            f"save the result of task {rec.name!r}",
        )
        self._note_slot(rec.name, slot)
        if slot[1] in LOADABLE:
            for unit_slot, _ in self._units.get(rec.name, {}).values():
                self._drop_large(unit_slot, slot)
        return slot[1] != UNSAVED

    def _save_value(
        self, name: str, index: int, attempts: int, started: float | None,
        finished: float | None, duration: float | None, value: Any, what: str,
        *, fingerprint: str | None = None,
    ) -> JournalEntry:
        """Pickle ``value`` (inline, or as a blob when large) into a record of ``name``
        (``index`` >= 0: one of its items); the record's slot."""
        kind = INLINE
        extra: str | None = None
        data = b""
        file_ref = self._file_ref(value)
        if file_ref is not None:
            kind, extra = RESULT_FILE, file_ref
        else:
            try:
                data = dumps(materialize(value))
            except Exception as exc:
                kind, extra = UNSAVED, f"could not pickle it: {type(exc).__name__}: {exc}"
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

    def result_folder(self) -> str | None:
        """Where process workers write large results themselves, if this store has one;
        such a file is the saved result (see :mod:`flowforge._resultfiles`)."""
        if self._result_folder is None:
            try:
                self._result_folder = self.store.result_folder(self.workflow, self.run_id) or ""
            except OSError as exc:
                raise self._save_error("make the folder for large results", exc) from exc
        return self._result_folder or None

    def _file_ref(self, value: Any) -> str | None:
        """The name of ``value``'s file when it is a handle to a file in this run's folder."""
        if not isinstance(value, Handle) or not self._result_folder:
            return None
        file = value.file
        if file is None:
            return None
        folder, ref = os.path.split(file.path)
        if folder != self._result_folder:
            return None
        try:  # the sealed journal vouches for the file's header (see _resultfiles)
            return f"{ref}:{header_digest(file.path)}"
        except OSError:
            return None

    def mapped_succeeded(self, rec: TaskRun, count: int) -> bool:
        """Save a mapped task's success: its result is its ``count`` items' records. False
        (and a record saying why) when an item's result could not be saved."""
        units = self._units.get(rec.name, {})
        missing = next(
            (i for i in range(count) if i not in units or units[i][0][1] not in LOADABLE),
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
        value: Any, inputs: str, *, iteration: bool = False,
    ) -> None:
        """Save one map item's (or loop iteration's) result as soon as it is there;
        ``inputs`` identifies the upstream results it came from.

        A loop resumes from its last iteration saved, so once iteration ``index`` is
        saved (its result can be loaded back), the large result of the one before (its
        own file or row) is deleted, as is that of an earlier record of the same
        iteration: a long loop keeps one, not one per iteration. Records stay, so the
        count of iterations saved in a row still holds."""
        now = time.time()
        fingerprint = f"{self._fingerprints[name]}#{inputs}"
        slot = self._save_value(
            name, index, attempts, started, now, duration, value,
            f"save item {index} of task {name!r}", fingerprint=fingerprint,
        )
        units = self._units.setdefault(name, {})
        replaced = units.get(index)
        if replaced is not None:
            self._dead += 1
        units[index] = (slot, unit_record(name, attempts, started, now, duration, slot[1],
                                           slot[2], fingerprint))
        if iteration and slot[1] in LOADABLE:  # else a resume needs the one before
            for old in (units.get(index - 1), replaced):  # replaced: a rerun iteration
                if old is not None:
                    self._drop_large(old[0], slot)

    def _drop_large(self, old: JournalEntry, new: JournalEntry) -> None:
        """Delete the large result of record ``old``, superseded by ``new`` (unless both
        name one file: an iteration that returned the result it was given)."""
        kind, ref = old[1], old[2]
        if kind not in (BLOB, RESULT_FILE) or ref is None or ref == new[2]:
            return
        try:
            self.store.delete_blob(self.workflow, self.run_id, ref)
        except (OSError, StateError):  # left for the run's deletion to remove
            pass

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
        if found is None or found[0][1] not in LOADABLE:
            msg = f"item {index} of task {name!r} has no saved result in {self._where}"
            raise StateError(msg, path=self._where, task=name)
        return load_result(self.store, self.workflow, self.run_id, f"{name}[{index}]", found[0])

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
        if slot is None or (slot[1] not in LOADABLE and slot[1] != MAPPED):
            raise KeyError(name)
        try:
            if slot[1] == MAPPED:
                return [self.load_unit(name, i) for i in range(int(slot[2] or 0))]
            return load_result(self.store, self.workflow, self.run_id, name, slot)
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

    def watch_cancel(self, cancel: Callable[..., Any]) -> None:
        """Until the session closes, hand each cancel request for this run (see
        :mod:`~flowforge.persistence.cancelling`) to ``cancel(reason, force=...)``, on
        the watch's thread."""
        from .cancelling import WATCH

        stop = WATCH.watch(self.store.cancel_path(self.workflow, self.run_id),
                           lambda request: cancel(request.reason, force=request.force))
        self._stack.callback(stop)  # before the lock goes: a late request finds no run

    def close(self) -> None:
        """Release the lock and the store (idempotent); used on every way out. Results can
        still be loaded afterwards: the store reopens on demand."""
        self._stack.close()
        self.store.close()

    # -- inside ----------------------------------------------------------------------

    def _note_slot(self, name: str, slot: JournalEntry) -> None:
        if name in self._slots:
            self._dead += 1
        self._slots[name] = slot

    def _compact(self) -> None:
        """Rewrite the journal with the live records only: one per task, plus the items
        of mapped tasks (their result) and of tasks not finished yet (for a resume)."""
        journal = read_journal(self.store, self.workflow, self.run_id)
        payload_at = {loc: bytes(p) for loc, p in journal.scan.entries}
        # (python, cloudpickle) -> [(task, index, slot)]; index -1 is the task's own record
        groups: dict[tuple[str, str], list[tuple[str, int, JournalEntry]]] = {}
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
        kept: list[tuple[str, int, JournalEntry]] = []
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
        units: dict[str, dict[int, tuple[JournalEntry, TaskRecord]]] = {}
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

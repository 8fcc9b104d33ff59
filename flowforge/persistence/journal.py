"""Reading a run's journal back, and the result records in it.

:func:`read_journal` turns a store's verified frames into the latest record and slot of
each task (and of each map item or loop iteration); :func:`load_result` unpickles one
saved result from its slot. A result is pickled (:func:`dumps`) with the standard
pickler when it can be (plain data: the fastest path, and the bytes cloudpickle would
write) and with cloudpickle otherwise (lambdas, functions and classes defined in
``__main__``). Results over ``BLOB_THRESHOLD`` bytes go in a blob of their own.
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Mapping
from typing import Any

from ..errors import StateError
from ..states import TaskState
from . import _frames
from .records import (
    BLOB,
    INLINE,
    LOADABLE,
    RESULT_FILE,
    TASK_ENVELOPE_AT,
    TASK_LENGTH,
    UNSAVED,
    TaskRecord,
    record_from,
)
from .store import StateStore

__all__ = [
    "BLOB_THRESHOLD", "JournalState", "JournalEntry", "dumps", "live_records", "load_result",
    "read_journal", "unit_record",
]

HEADER_BYTE = ord("{")
UPSTREAM_BYTE = ord("U")  # a run's task upstreams (upstream_record)

BLOB_THRESHOLD = 1 << 20

#: Where one task's latest record sits in a journal: (location, result kind, blob ref or
#: note, result offset). (Not a worker slot: those are the process executor's.)
JournalEntry = tuple[Any, int, "str | None", int]


class JournalState:
    """A run's journal as read back: latest record and slot per task, and its headers."""

    def __init__(self) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.slots: dict[str, JournalEntry] = {}
        #: Per task, its saved map items or loop iterations: index -> (slot, record).
        self.units: dict[str, dict[int, tuple[JournalEntry, TaskRecord]]] = {}
        self.known: set[str] = set()
        self._upstream_raw: bytes | memoryview | None = None  # read on demand
        self.frames = 0
        self.torn = False
        self._order: list[str] = []  # the newest header's task order

    def known_order(self) -> list[str]:
        """Every known task, in the newest header's order (others after, by name)."""
        return self._order + sorted(self.known - set(self._order))

    @property
    def upstream(self) -> dict[str, tuple[str, ...]]:
        """Each task's upstream tasks, from the record written after the newest header
        (empty for a run saved before such records existed)."""
        raw = self._upstream_raw
        if raw is None:
            return {}
        try:
            ups = marshal.loads(raw[1:])
        except (ValueError, EOFError, TypeError):
            return {}
        if not isinstance(ups, list) or len(ups) != len(self._order):
            return {}
        return dict(zip(self._order, ups, strict=True))
        self.scan: Any = None


def upstream_record(order: list[str], upstream: Mapping[str, tuple[str, ...]]) -> bytes:
    """The journal record of each task's upstreams, in ``order`` (marshal: 1.4 ms for
    10,000 tasks, where JSON in the header took 11)."""
    return b"U" + marshal.dumps([tuple(upstream.get(name, ())) for name in order])


def read_journal(store: StateStore, workflow: str, run_id: str) -> JournalState:
    where = store.where(workflow, run_id)
    scan = store.read_journal(workflow, run_id)
    out = JournalState()
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
            claimed = head.get("run_id")
            if claimed is not None and (claimed != run_id
                                        or head.get("workflow", workflow) != workflow):
                raise StateError(_frames.swapped_message(where, str(claimed), run_id),
                                 path=where, problem=_frames.CORRUPT)
            python = str(head.get("python", ""))
            cloudpickle = str(head.get("cloudpickle", ""))
            tasks = head.get("tasks", ())
            out.known.update(tasks)
            out._order = list(tasks)
            continue
        if payload[0] == UPSTREAM_BYTE:  # parsed only if asked for (not by a resume)
            out._upstream_raw = payload
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


def live_records(journal: JournalState) -> int:
    return len(journal.slots) + sum(len(u) for u in journal.units.values())


def dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


def unit_record(
    name: str, attempts: int, started: float, finished: float, duration: float, kind: int,
    extra: str | None, fingerprint: str,
) -> TaskRecord:
    now = _frames.current_versions()
    return TaskRecord(
        name, TaskState.SUCCEEDED, attempts, started, finished, duration, fingerprint, None,
        kind in LOADABLE, extra if kind == UNSAVED else None, now["python"],
        now["cloudpickle"],
    )


def load_result(
    store: StateStore, workflow: str, run_id: str, name: str, slot: JournalEntry
) -> Any:
    loc, kind, extra, offset = slot
    where = store.where(workflow, run_id)
    if kind == RESULT_FILE:
        assert extra is not None
        return store.load_file(workflow, run_id, extra)
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

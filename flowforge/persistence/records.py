"""What a store keeps: a run's summary (:class:`RunInfo`) and each task's outcome
(:class:`TaskRecord`), with the byte layout of a task record.

A task record's payload is ``b"T"``, the length of a small envelope (4 bytes), the
envelope (a tuple of strings and numbers in ``marshal`` format: three times faster to
read than pickle, and it cannot build arbitrary objects), then the task's pickled
result, if it was kept inline. The envelope is
read without touching the result, so scanning a journal never unpickles a result; the
result is unpickled only when a task downstream or the user asks for it.
"""

from __future__ import annotations

import marshal
import struct
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from ..states import TaskState
from . import _frames

__all__ = ["RunInfo", "TaskRecord"]

TASK_TAG = b"T"
TASK_LENGTH = struct.Struct(">I")  # the envelope's length, after the tag
TASK_ENVELOPE_AT = 1 + TASK_LENGTH.size

#: The SQLite store's database, in the state folder: its presence says which store it is.
DB_FILE = "flowforge.sqlite3"

#: How a record holds its result.
NO_RESULT = 0
INLINE = 1
BLOB = 2
UNSAVED = 3
MAPPED = 4  # a mapped task: its result is the list of its items' records (``extra``: count)
RESULT_FILE = 5  # a large result a process worker wrote to the run's folder (``extra``: its name)
#: Kinds whose result can be loaded back (MAPPED: through its items).
LOADABLE = (INLINE, BLOB, RESULT_FILE)


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """One run as listed by :meth:`PersistenceManager.runs`.

    ``status`` is ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``interrupted``
    (the process died: the run says ``running`` but nobody holds its lock). Times are
    ``time.time()`` seconds; ``finished`` is None until the run ends.
    """

    workflow: str
    run_id: str
    status: str
    started: float
    finished: float | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    interrupted: int = 0  # tasks that were running when the run's process died
    restored: int = 0
    resumes: int = 0
    store: str = "files"
    job: str | None = None  # the scheduler job that started it
    target: str | None = None  # the file that defined the workflow (for flowforge resume)
    params: dict[str, Any] | None = None  # the run's params, when they are plain JSON data
    # The run key (see runkey.py): which later run may resume this one.
    defined_in: str | None = None
    params_digest: str | None = None
    scheduled_for: str | None = None  # a scheduler fire's time (ISO 8601)

    def to_json(self) -> bytes:
        """The summary as a state header: format and versions first, then the fields."""
        return _frames.header(**asdict(self))

    @classmethod
    def from_json(cls, data: bytes | memoryview, where: str) -> RunInfo:
        """Read a summary back, refusing one from a newer state format."""
        fields = _frames.read_header(data, where)
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})


class TaskRecord(NamedTuple):
    """One task's saved outcome. ``saved`` says whether its result can be loaded;
    ``note`` says why not when it cannot. ``python``/``cloudpickle`` name the versions
    that pickled the result. (A named tuple: resuming 100,000 tasks reads 100,000.)"""

    name: str
    state: TaskState
    attempts: int
    started: float | None
    finished: float | None
    duration: float | None
    fingerprint: str
    error: str | None = None
    saved: bool = False
    note: str | None = None
    python: str = ""
    cloudpickle: str = ""


def encode_task(
    name: str,
    state: TaskState,
    attempts: int,
    started: float | None,
    finished: float | None,
    duration: float | None,
    fingerprint: str,
    error: str | None,
    kind: int,
    extra: str | None,
    result: bytes = b"",
    index: int = -1,
) -> bytes:
    """A task's record; ``index`` >= 0 makes it the record of one map item or loop
    iteration of that task."""
    env = marshal.dumps(
        (str(name), state.value, attempts, started, finished, duration, fingerprint, error,
         kind, extra, index),
        4,
    )
    return b"".join((TASK_TAG, TASK_LENGTH.pack(len(env)), env, result))


_STATES: dict[str, TaskState] = {s.value: s for s in TaskState}


def record_from(env: tuple[Any, ...], python: str, cloudpickle: str) -> TaskRecord:
    name, state, attempts, started, finished, duration, fp, error, kind, extra, _ = env
    return TaskRecord(
        name,
        _STATES[state],
        attempts,
        started,
        finished,
        duration,
        fp,
        error,
        kind in LOADABLE or kind == MAPPED,
        extra if kind == UNSAVED else None,
        python,
        cloudpickle,
    )

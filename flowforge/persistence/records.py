"""What a store keeps: a run's summary (:class:`RunInfo`) and each task's outcome
(:class:`TaskRecord`), with the byte layout of a task record.

A task record's payload is ``b"T"``, the length of a small pickled envelope (4 bytes),
the envelope, then the task's pickled result, if it was kept inline. The envelope is
read without touching the result, so scanning a journal never unpickles a result; the
result is unpickled only when a task downstream or the user asks for it.
"""

from __future__ import annotations

import json
import pickle
import struct
from dataclasses import asdict, dataclass
from typing import Any

from ..states import TaskState

__all__ = ["RunInfo", "TaskRecord"]

TASK_TAG = b"T"
_LEN = struct.Struct(">I")

#: How a record holds its result.
NO_RESULT = 0
INLINE = 1
BLOB = 2
UNSAVED = 3


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
    restored: int = 0
    resumes: int = 0
    store: str = "files"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | memoryview) -> RunInfo:
        fields = json.loads(bytes(data))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRecord:
    """One task's saved outcome. ``saved`` says whether its result can be loaded;
    ``note`` says why not when it cannot. ``python``/``cloudpickle`` name the versions
    that pickled the result."""

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
) -> bytes:
    env = pickle.dumps(
        (name, state.value, attempts, started, finished, duration, fingerprint, error, kind, extra),
        protocol=5,
    )
    return b"".join((TASK_TAG, _LEN.pack(len(env)), env, result))


def decode_task(payload: bytes | memoryview) -> tuple[tuple[Any, ...], int]:
    """The envelope tuple and the offset of the inline result within ``payload``.

    Only call this on a payload whose signature was checked."""
    (n,) = _LEN.unpack_from(payload, 1)
    start = 1 + _LEN.size
    env = pickle.loads(payload[start : start + n])
    return env, start + n


def record_from(env: tuple[Any, ...], versions: dict[str, str]) -> TaskRecord:
    name, state, attempts, started, finished, duration, fp, error, kind, extra = env
    return TaskRecord(
        name=name,
        state=TaskState(state),
        attempts=attempts,
        started=started,
        finished=finished,
        duration=duration,
        fingerprint=fp,
        error=error,
        saved=kind in (INLINE, BLOB),
        note=extra if kind == UNSAVED else None,
        python=versions.get("python", ""),
        cloudpickle=versions.get("cloudpickle", ""),
    )

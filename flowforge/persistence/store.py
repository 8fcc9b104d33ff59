"""The :class:`StateStore` interface: where runs, journals and large results live.

A store moves bytes; it does not pickle. Every payload it writes is sealed into a signed
frame (:mod:`._frames`) and every payload it hands back has passed its checksum and
signature. The two stores, files (:mod:`.files`) and SQLite (:mod:`.sqlite`), pass the
same tests. Locking is shared: one ``filelock`` file per workflow in the state folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import StateError, WorkflowLockedError
from . import DURABILITY, _frames
from .records import RunInfo

__all__ = ["Journal", "JournalScan", "StateStore", "UnreadableRun", "owner_alive",
           "read_owner", "write_owner"]


@dataclass(frozen=True, kw_only=True)
class UnreadableRun:
    """A saved run whose summary cannot be read (damaged, foreign, or not readable by
    this user), as a tolerant listing reports it: ``reason`` is the error's text, naming
    the file; ``modified`` is when it was last written (time.time() seconds), if known.
    ``workflow`` is the folder's name when the summary is all that names the workflow."""

    workflow: str
    run_id: str
    where: str
    reason: str
    modified: float | None = None
    #: "corrupt" or "foreign" when its frames said so (see persistence/_frames.py).
    problem: str | None = None


@dataclass(slots=True)
class JournalScan:
    """The verified contents of a run's journal.

    ``entries`` are ``(location, payload)`` in write order, headers included. ``torn`` is
    True when a half-written record at the end was dropped; ``end`` is where the valid
    data stops (a writer resumes there)."""

    entries: list[tuple[Any, memoryview]] = field(default_factory=list)
    torn: bool = False
    end: int = 0


class Journal(ABC):
    """An open, append-only journal of one run."""

    @abstractmethod
    def append(self, payload: bytes) -> Any:
        """Seal and write ``payload``; returns its location once the store's durability
        level holds for it. Raises ``OSError`` and leaves the journal as it was."""

    @abstractmethod
    def close(self) -> None: ...


class StateStore(ABC):
    """Saved runs of every workflow under one state folder."""

    #: Short name used in :class:`RunInfo` and messages.
    kind = "custom"

    def __init__(self, state_dir: str | os.PathLike[str], *, durability: str = "process") -> None:
        if durability not in DURABILITY:
            msg = f"durability must be one of {DURABILITY}, got {durability!r}"
            raise ValueError(msg)
        self.state_dir = os.path.abspath(os.fspath(state_dir))  # messages name whole paths
        self.durability = durability
        self._sealer: _frames.Sealer | None = None

    # -- keys ------------------------------------------------------------------------

    def sealer(self, *, create: bool = True) -> _frames.Sealer | None:
        """The sealer for this folder's key (made on first write when ``create``)."""
        if self._sealer is None:
            key = _frames.load_key(self.state_dir, create=create)
            if key is None:
                return None
            self._sealer = _frames.Sealer(key)
        return self._sealer

    # -- runs ------------------------------------------------------------------------

    @abstractmethod
    def write_run(self, info: RunInfo) -> None:
        """Create or replace the summary of ``info.run_id``, atomically."""

    @abstractmethod
    def list_runs(
        self, workflow: str | None = None, *, unreadable: list[UnreadableRun] | None = None
    ) -> list[RunInfo]:
        """Every saved run (of ``workflow``), in no particular order. A summary that
        cannot be read raises StateError, unless ``unreadable`` is given: then it is
        appended there and the listing goes on (what the dashboard and ``flowforge
        history`` do, so one damaged file does not hide the rest)."""

    @abstractmethod
    def delete_run(self, workflow: str, run_id: str) -> None:
        """Remove the run's summary, journal and results; a missing run is not an error."""

    # -- journals --------------------------------------------------------------------

    @abstractmethod
    def open_journal(self, workflow: str, run_id: str, scan: JournalScan | None) -> Journal:
        """Open the run's journal for appending after ``scan`` (None: a new journal)."""

    @abstractmethod
    def read_journal(self, workflow: str, run_id: str) -> JournalScan:
        """The run's verified journal; StateError if any of it is corrupt or foreign."""

    @abstractmethod
    def read_payload(self, workflow: str, run_id: str, location: Any) -> memoryview:
        """The verified payload at ``location`` (as returned by append or a scan)."""

    @abstractmethod
    def put_blob(self, workflow: str, run_id: str, data: bytes) -> str:
        """Save a large result on its own; returns a reference for :meth:`read_blob`."""

    @abstractmethod
    def read_blob(self, workflow: str, run_id: str, ref: str) -> bytes: ...

    def delete_blob(self, workflow: str, run_id: str, ref: str) -> None:  # noqa: B027
        """Remove a large result no record needs any more (from :meth:`put_blob`, or a
        file in :meth:`result_folder`); gone already is not an error. A store that
        cannot keeps it until the run is deleted."""

    def result_folder(self, workflow: str, run_id: str) -> str | None:
        """A folder where process workers may write large results themselves (see
        :mod:`flowforge._resultfiles`), or None when this store keeps none."""
        return None

    def load_file(self, workflow: str, run_id: str, ref: str) -> Any:
        """A large result a worker wrote to :meth:`result_folder`, mapped, not copied."""
        msg = f"the {self.kind} store keeps no result files (asked for {ref!r})"
        raise StateError(msg, path=self.where(workflow, run_id))

    @abstractmethod
    def rewrite_journal(self, workflow: str, run_id: str, payloads: list[bytes]) -> list[Any]:
        """Replace the journal by ``payloads`` at once (compaction); their new locations."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing open
        """Release what the store holds open."""

    def quarantine(self, workflow: str, run_id: str, why: str) -> str | None:
        """Set a damaged run aside, with a note saying ``why``; where it went, or None
        when this store cannot (the caller then reports the damage as before)."""
        return None

    def quarantined(self) -> list[dict[str, Any]]:
        """The notes of the runs set aside (workflow, run_id, why, when, where)."""
        return []

    def where(self, workflow: str, run_id: str) -> str:
        """Where a run's journal lives, for messages."""
        return f"{self.state_dir} ({workflow!r} run {run_id})"

    # -- locking ---------------------------------------------------------------------

    @abstractmethod
    def lock_path(self, workflow: str) -> str:
        """The file whose lock says a process is running ``workflow`` here."""

    def cancel_path(self, workflow: str, run_id: str) -> str:
        """The file through which another process asks ``run_id`` to cancel (see
        :mod:`flowforge.persistence.cancelling`): beside the workflow's lock."""
        if not run_id or not all(c.isalnum() or c in "-_." for c in run_id) or (
            run_id.startswith(".")
        ):
            msg = f"{run_id!r} is not a run id"
            raise ValueError(msg)
        return f"{self.lock_path(workflow)}.cancel-{run_id}"

    @contextlib.contextmanager
    def lock(self, workflow: str) -> Iterator[None]:
        """Hold ``workflow``'s lock, or raise :class:`WorkflowLockedError` at once.

        The lock is an OS file lock (``filelock``): it dies with its process, so a run
        killed with ``kill -9`` leaves nothing that blocks the next one."""
        from filelock import FileLock, Timeout

        path = self.lock_path(workflow)
        _frames.make_dirs(os.path.dirname(path))
        lock = FileLock(path, timeout=0, mode=_frames.FILE_MODE, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise self._locked_error(workflow, path) from None
        owner = path + ".owner"
        try:
            self.note_owner(workflow)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(owner)
            lock.release()

    def note_owner(self, workflow: str, run_id: str | None = None) -> None:
        """Say who holds ``workflow``'s lock (pid, host, start, and the run once known):
        what a second process's error names and what ``flowforge cancel`` signals."""
        write_owner(self.lock_path(workflow), run_id=run_id)

    def owner(self, workflow: str) -> dict[str, Any] | None:
        """The lock holder's note, if any (see :meth:`note_owner`)."""
        return read_owner(self.lock_path(workflow))

    def is_locked(self, workflow: str) -> bool:
        """True while a live process holds ``workflow``'s lock.

        Read from the holder's note (pid, host, start) rather than by trying the lock,
        so that listing runs never makes a run starting at that moment fail."""
        owner = read_owner(self.lock_path(workflow))
        return owner is not None and owner_alive(owner)

    def _locked_error(self, workflow: str, path: str) -> WorkflowLockedError:
        pid: int | None = None
        since = ""
        # The holder writes its note just after it takes the lock: give it a moment, so
        # the error can name it (a starter racing it would otherwise say "another process").
        owner = read_owner(path, wait=_OWNER_WAIT)
        try:
            if owner is not None:
                pid = int(owner["pid"])
                since = time.strftime(" since %H:%M:%S", time.localtime(owner["since"]))
        except (ValueError, KeyError, TypeError):
            pass
        who = f"process {pid}{since}" if pid else "another process"
        msg = (
            f"workflow {workflow!r} is already running in {who} on state folder "
            f"{self.state_dir!r} (lock {path}); wait for it to finish, stop it, or give this "
            "run another state_dir"
        )
        return WorkflowLockedError(msg, workflow=workflow, pid=pid, path=path)


_OWNER_WAIT = 1.0  # seconds a refused starter waits for the holder's note


def write_owner(lock_path: str, **extra: Any) -> None:
    """Note that this process holds the lock at ``lock_path`` (pid, host, since)."""
    import socket

    note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **extra}
    _frames.write_atomic(lock_path + ".owner", json.dumps(note).encode(), fsync=False)


def read_owner(lock_path: str, *, wait: float = 0.0) -> dict[str, Any] | None:
    """The note (pid, host, since) of whoever holds the lock at ``lock_path``; with
    ``wait``, up to that many seconds for a holder that has not written it yet."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(lock_path + ".owner", "rb") as f:
                owner = json.loads(f.read())
            return owner if isinstance(owner, dict) else None
        except (OSError, ValueError):  # none yet, or being written
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process a lock note names still runs (one on another machine is
    assumed to: it cannot be told from here)."""
    import socket

    if owner.get("host") != socket.gethostname():
        return True
    import psutil

    try:
        proc = psutil.Process(int(owner["pid"]))
        return bool(proc.create_time() <= float(owner["since"]) + 1.0)
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def check_scan(where: str, problem: str | None) -> bool:
    """True for a torn tail (dropped quietly); raise for corruption or a foreign record."""
    if problem is None:
        return False
    if problem == _frames.TORN:
        return True
    raise StateError(_frames.problem_message(where, problem), path=where, problem=problem)

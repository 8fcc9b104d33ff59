"""A store in one SQLite database (stdlib ``sqlite3``, WAL mode): ``state_store="sqlite"``.

Same frames as the file store (each row holds one signed frame, checked before use),
in ``<state_dir>/flowforge.sqlite3``. Each record is its own transaction: committed
before its task is reported finished. ``durability="process"`` runs with
``synchronous=NORMAL`` (a commit survives the process dying), ``"fsync"`` with
``synchronous=FULL`` (it survives power loss). Pick it when many processes read the
state (a dashboard, the CLI) or a folder of small files is a burden.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
import threading
from typing import Any

from ..errors import StateError
from . import _frames
from .files import check_run_id, workflow_dir_name
from .records import DB_FILE, RunInfo
from .store import Journal, JournalScan, StateStore, UnreadableRun

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    workflow TEXT NOT NULL, run_id TEXT NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (workflow, run_id));
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY, workflow TEXT NOT NULL, run_id TEXT NOT NULL,
    frame BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS journal_run ON journal (workflow, run_id, id);
CREATE TABLE IF NOT EXISTS blobs (
    ref TEXT PRIMARY KEY, workflow TEXT NOT NULL, run_id TEXT NOT NULL, frame BLOB NOT NULL);
"""


class SQLiteStore(StateStore):
    """Runs in ``<state_dir>/flowforge.sqlite3``; see the module docstring."""

    kind = "sqlite"

    def __init__(self, state_dir: str | os.PathLike[str], *, durability: str = "process") -> None:
        super().__init__(state_dir, durability=durability)
        self.path = os.path.join(self.state_dir, DB_FILE)
        self._db: sqlite3.Connection | None = None
        self._mutex = threading.RLock()

    # -- the connection --------------------------------------------------------------

    def _conn(self, *, create: bool = True) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not os.path.exists(self.path):
            if not create:
                return None
            _frames.make_dirs(self.state_dir)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, _frames.FILE_MODE))
        fd = _frames.open_state(self.path)
        try:
            _frames.check_owner(fd, self.path)
        finally:
            os.close(fd)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if self.durability == "fsync" else "NORMAL"
            db.execute(f"PRAGMA synchronous={sync}")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None:
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('format', ?)",
                    (str(_frames.FORMAT_VERSION),),
                )
            elif int(row[0]) != _frames.FORMAT_VERSION:
                newer = int(row[0]) > _frames.FORMAT_VERSION
                fix = "upgrade FlowForge" if newer else "move the database aside"
                msg = (
                    f"state database {self.path} was written in state format {row[0]}, "
                    f"{'newer than' if newer else 'older than'} this FlowForge reads "
                    f"({_frames.FORMAT_VERSION}); {fix}, or use another state_dir"
                )
                raise StateError(msg, path=self.path)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        self._db = db
        return db

    def _corrupt(self, exc: Exception) -> StateError:
        msg = (
            f"state database {self.path} cannot be read ({exc}); move it aside (or delete it) "
            "and run again, or use another state_dir"
        )
        return StateError(msg, path=self.path)

    def _operational(self, exc: sqlite3.OperationalError) -> Exception:
        """A full or failing disk is the OSError a file store raises; anything else
        SQLite calls operational (a missing table or column: a damaged schema) is a
        damaged database, named with the fix."""
        text = str(exc).lower()
        if any(w in text for w in ("full", "disk i/o", "readonly", "unable to open",
                                   "locked")):
            return _os_error(exc)
        return self._corrupt(exc)

    def _query(self, sql: str, args: tuple[Any, ...] = (), *, create: bool = True) -> list[Any]:
        with self._mutex:
            db = self._conn(create=create)
            if db is None:
                return []
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise self._operational(exc) from exc
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from exc

    def _open(self, frame: bytes, where: str) -> memoryview:
        sealer = self.sealer(create=False)
        if sealer is None:
            raise StateError(_frames.problem_message(where, _frames.FOREIGN), path=where)
        return memoryview(sealer.open_one(frame, where))

    def _seal(self, payload: bytes) -> bytes:
        sealer = self.sealer()
        assert sealer is not None
        return sealer.seal(payload)

    def where(self, workflow: str, run_id: str) -> str:
        return f"{self.path} (workflow {workflow!r}, run {run_id})"

    def lock_path(self, workflow: str) -> str:
        return os.path.join(self.state_dir, ".locks", workflow_dir_name(workflow) + ".lock")

    def close(self) -> None:
        with self._mutex:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- runs ------------------------------------------------------------------------

    def write_run(self, info: RunInfo) -> None:
        frame = self._seal(info.to_json())
        self._query(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?)",
            (info.workflow, check_run_id(info.run_id), frame),
        )

    def list_runs(
        self, workflow: str | None = None, *, unreadable: list[UnreadableRun] | None = None
    ) -> list[RunInfo]:
        if workflow is None:
            rows = self._query("SELECT workflow, run_id, frame FROM runs", create=False)
        else:
            rows = self._query(
                "SELECT workflow, run_id, frame FROM runs WHERE workflow = ?",
                (workflow,),
                create=False,
            )
        out = []
        for w, r, f in rows:
            where = self.where(w, r)
            try:
                info = RunInfo.from_json(self._open(f, where), where)
                if (info.workflow, info.run_id) != (w, r):  # another run's row copied here
                    raise StateError(_frames.swapped_message(where, info.run_id, r),
                                     path=where, problem=_frames.CORRUPT)
                out.append(info)
            except StateError as exc:
                if unreadable is None:
                    raise
                unreadable.append(UnreadableRun(workflow=w, run_id=r, where=where,
                                                reason=str(exc),
                                                problem=getattr(exc, "problem", None)))
        return out

    def delete_run(self, workflow: str, run_id: str) -> None:
        for table in ("journal", "blobs", "runs"):
            self._query(
                f"DELETE FROM {table} WHERE workflow = ? AND run_id = ?", (workflow, run_id)
            )

    # -- journals --------------------------------------------------------------------

    def open_journal(self, workflow: str, run_id: str, scan: JournalScan | None) -> Journal:
        check_run_id(run_id)
        return _SQLiteJournal(self, workflow, run_id)

    def read_journal(self, workflow: str, run_id: str) -> JournalScan:
        rows = self._query(
            "SELECT id, frame FROM journal WHERE workflow = ? AND run_id = ? ORDER BY id",
            (workflow, run_id),
            create=False,
        )
        where = self.where(workflow, run_id)
        return JournalScan(entries=[(rowid, self._open(f, where)) for rowid, f in rows])

    def read_payload(self, workflow: str, run_id: str, location: Any) -> memoryview:
        return self._one("journal", "id", location, workflow, run_id, "a record")

    def put_blob(self, workflow: str, run_id: str, data: bytes) -> str:
        ref = secrets.token_hex(8)
        self._query(
            "INSERT INTO blobs VALUES (?, ?, ?, ?)", (ref, workflow, run_id, self._seal(data))
        )
        return ref

    def delete_blob(self, workflow: str, run_id: str, ref: str) -> None:
        self._query(
            "DELETE FROM blobs WHERE ref = ? AND workflow = ? AND run_id = ?",
            (ref, workflow, run_id),
        )

    def read_blob(self, workflow: str, run_id: str, ref: str) -> bytes:
        return bytes(self._one("blobs", "ref", ref, workflow, run_id, "a saved result"))

    def _one(
        self, table: str, column: str, key: Any, workflow: str, run_id: str, what: str
    ) -> memoryview:
        """The verified payload of one stored frame of a run, or a StateError saying so."""
        rows = self._query(
            f"SELECT frame FROM {table} WHERE {column} = ? AND workflow = ? AND run_id = ?",
            (key, workflow, run_id),
        )
        where = self.where(workflow, run_id)
        if not rows:
            msg = f"{what} of {where} is gone (was the run deleted or pruned?)"
            raise StateError(msg, path=self.path)
        return self._open(rows[0][0], where)

    def rewrite_journal(self, workflow: str, run_id: str, payloads: list[bytes]) -> list[Any]:
        frames = [self._seal(p) for p in payloads]
        with self._mutex:
            db = self._conn()
            assert db is not None
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "DELETE FROM journal WHERE workflow = ? AND run_id = ?", (workflow, run_id)
                )
                ids = [
                    db.execute(
                        "INSERT INTO journal (workflow, run_id, frame) VALUES (?, ?, ?)",
                        (workflow, run_id, f),
                    ).lastrowid
                    for f in frames
                ]
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return ids


def _os_error(exc: sqlite3.OperationalError) -> OSError:
    """SQLite's "database or disk is full" and friends, as the OSError a file store raises."""
    text = str(exc)
    code = errno.ENOSPC if "full" in text.lower() else errno.EIO
    return OSError(code, f"SQLite: {text}")


class _SQLiteJournal(Journal):
    __slots__ = ("_store", "_workflow", "_run_id")

    def __init__(self, store: SQLiteStore, workflow: str, run_id: str) -> None:
        self._store = store
        self._workflow = workflow
        self._run_id = run_id

    def append(self, payload: bytes) -> Any:
        store = self._store
        frame = store._seal(payload)
        with store._mutex:
            db = store._conn()
            assert db is not None
            try:
                cur = db.execute(
                    "INSERT INTO journal (workflow, run_id, frame) VALUES (?, ?, ?)",
                    (self._workflow, self._run_id, frame),
                )
            except sqlite3.OperationalError as exc:
                raise store._operational(exc) from exc
            except sqlite3.DatabaseError as exc:
                raise store._corrupt(exc) from exc
        return cur.lastrowid

    def close(self) -> None:
        pass

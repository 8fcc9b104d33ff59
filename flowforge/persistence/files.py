"""The default store: plain files in the state folder, one journal per run.

Layout (every file owner-only, every folder 0700)::

    state/
      .flowforge-key             the HMAC key that signs every record
      <workflow>/
        .lock, .lock.owner       who runs this workflow now
        <run_id>.run             the run's summary (one signed JSON frame), replaced atomically
        <run_id>.journal         append-only: a header, then one frame per finished task
        <run_id>.blobs/<n>.pkl   results over ``BLOB_THRESHOLD`` bytes, one file each

A task's record is one ``write()`` on a file opened with ``O_APPEND``: once it returns,
the record survives the process dying. ``durability="fsync"`` adds an ``fdatasync``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from typing import Any

from ..errors import StateError
from . import _frames
from .records import RunInfo
from .store import Journal, JournalScan, StateStore, UnreadableRun, check_scan

__all__ = ["FileStore"]

_log = logging.getLogger("flowforge")

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def workflow_dir_name(workflow: str) -> str:
    """A folder name for ``workflow``: readable, and unique even after escaping."""
    safe = _SAFE.sub("_", workflow)[:80]
    if safe != workflow or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(workflow.encode()).hexdigest()[:8]}"
    return safe


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        msg = f"{run_id!r} is not a run id (letters, digits, '.', '_' and '-' only)"
        raise ValueError(msg)
    return run_id


class FileStore(StateStore):
    """Runs as files under ``state_dir`` (see the module docstring for the layout)."""

    kind = "files"

    def _dir(self, workflow: str) -> str:
        return os.path.join(self.state_dir, workflow_dir_name(workflow))

    def _path(self, workflow: str, run_id: str, suffix: str) -> str:
        return os.path.join(self._dir(workflow), check_run_id(run_id) + suffix)

    def where(self, workflow: str, run_id: str) -> str:
        return self._path(workflow, run_id, ".journal")

    def lock_path(self, workflow: str) -> str:
        return os.path.join(self._dir(workflow), ".lock")

    # -- runs ------------------------------------------------------------------------

    def write_run(self, info: RunInfo) -> None:
        sealer = self.sealer()
        assert sealer is not None
        folder = self._dir(info.workflow)
        _frames.make_dirs(folder)
        _frames.write_atomic(
            self._path(info.workflow, info.run_id, ".run"),
            _frames.MAGIC + sealer.seal(info.to_json()),
            fsync=self.durability == "fsync",
        )

    def list_runs(
        self, workflow: str | None = None, *, unreadable: list[UnreadableRun] | None = None
    ) -> list[RunInfo]:
        sealer = self.sealer(create=False)
        if workflow is not None:
            folders = [self._dir(workflow)]
        else:
            try:
                names = sorted(os.listdir(self.state_dir))
            except FileNotFoundError:
                return []
            folders = [
                os.path.join(self.state_dir, n)
                for n in names
                if not n.startswith(".") and os.path.isdir(os.path.join(self.state_dir, n))
            ]
        runs: list[RunInfo] = []
        for folder in folders:
            try:
                names = os.listdir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if not name.endswith(".run"):
                    continue
                path = os.path.join(folder, name)
                try:
                    info = self._read_run(path, sealer)
                except (StateError, OSError) as exc:
                    if unreadable is None:
                        raise
                    unreadable.append(_unreadable(path, workflow, exc))
                    continue
                if info is not None and (workflow is None or info.workflow == workflow):
                    runs.append(info)
        return runs

    def _read_run(self, path: str, sealer: _frames.Sealer | None) -> RunInfo | None:
        """The summary in ``path``; None for one saved by an older FlowForge."""
        try:
            data = _frames.read_file(path)
        except StateError as exc:
            old = getattr(exc, "format", None)
            if isinstance(old, int) and old < _frames.FORMAT_VERSION:
                # A run saved by an older FlowForge: it cannot be resumed, and it must not
                # stop new runs either.
                _log.warning("%s (left out of the run list)", exc)
                return None
            raise
        if sealer is None:
            raise StateError(_frames.problem_message(path, _frames.FOREIGN), path=path)
        payload = sealer.open_one(data[len(_frames.MAGIC) :], path)
        info = RunInfo.from_json(payload, path)
        named = os.path.basename(path)[: -len(".run")]
        if info.run_id != named:  # another run's summary, copied over this one's
            raise StateError(_frames.swapped_message(path, info.run_id, named), path=path,
                             problem=_frames.CORRUPT)
        return info

    def quarantine(self, workflow: str, run_id: str, why: str) -> str | None:
        """Move a damaged run's files to ``<state>/quarantine/<workflow>/`` with a note
        (``<run_id>.why.json``): kept as evidence, out of every later run's way."""
        target = os.path.join(self.state_dir, "quarantine", workflow_dir_name(workflow))
        _frames.make_dirs(target)
        for suffix in (".journal", ".run", ".blobs"):
            source = self._path(workflow, run_id, suffix)
            if os.path.lexists(source):
                os.replace(source, os.path.join(target, os.path.basename(source)))
        note = {"workflow": workflow, "run_id": run_id, "why": why, "when": time.time(),
                "where": target}
        _frames.write_atomic(os.path.join(target, f"{check_run_id(run_id)}.why.json"),
                             json.dumps(note).encode(), fsync=False)
        return target

    def quarantined(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(glob.glob(os.path.join(self.state_dir, "quarantine", "*",
                                                  "*.why.json"))):
            try:
                with open(path, encoding="utf-8") as f:
                    note = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(note, dict):
                found.append(note)
        return found

    def delete_run(self, workflow: str, run_id: str) -> None:
        for suffix in (".journal", ".run"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(workflow, run_id, suffix))
        shutil.rmtree(self._path(workflow, run_id, ".blobs"), ignore_errors=True)

    # -- journals --------------------------------------------------------------------

    def open_journal(self, workflow: str, run_id: str, scan: JournalScan | None) -> Journal:
        sealer = self.sealer()
        assert sealer is not None
        _frames.make_dirs(self._dir(workflow))
        return _FileJournal(
            self._path(workflow, run_id, ".journal"),
            sealer,
            None if scan is None else scan.end,
            fsync=self.durability == "fsync",
        )

    def read_journal(self, workflow: str, run_id: str) -> JournalScan:
        path = self._path(workflow, run_id, ".journal")
        try:
            data = _frames.read_file(path)
        except FileNotFoundError:
            return JournalScan()
        if not data:
            return JournalScan(torn=True, end=0)
        sealer = self.sealer(create=False)
        if sealer is None:
            raise StateError(_frames.problem_message(path, _frames.FOREIGN), path=path)
        frames, end, problem = sealer.scan(data, len(_frames.MAGIC))
        torn = check_scan(path, problem)
        view = memoryview(data)
        return JournalScan(
            entries=[((off, n), view[off : off + n]) for off, n in frames], torn=torn, end=end
        )

    def read_payload(self, workflow: str, run_id: str, location: Any) -> memoryview:
        offset, length = location
        path = self._path(workflow, run_id, ".journal")
        start = offset - _frames.PAYLOAD_AT
        try:
            fd = _frames.open_state(path)
        except FileNotFoundError:
            msg = f"the journal {path} is gone (was the run deleted or pruned?)"
            raise StateError(msg, path=path) from None
        try:
            _frames.check_owner(fd, path)
            frame = os.pread(fd, _frames.OVERHEAD + length, start)
        finally:
            os.close(fd)
        sealer = self.sealer(create=False)
        if sealer is None:
            raise StateError(_frames.problem_message(path, _frames.FOREIGN), path=path)
        return memoryview(sealer.open_one(frame, path))

    def put_blob(self, workflow: str, run_id: str, data: bytes) -> str:
        sealer = self.sealer()
        assert sealer is not None
        folder = self._path(workflow, run_id, ".blobs")
        _frames.make_dirs(folder)
        ref = secrets.token_hex(8) + ".pkl"
        _frames.write_atomic(
            os.path.join(folder, ref),
            _frames.MAGIC + sealer.seal(_frames.header()) + sealer.seal(data),
            fsync=self.durability == "fsync",
        )
        return ref

    def delete_blob(self, workflow: str, run_id: str, ref: str) -> None:
        name = ref.partition(":")[0]  # a result file's reference carries its digest
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._path(workflow, run_id, ".blobs"), os.path.basename(name)))

    def read_blob(self, workflow: str, run_id: str, ref: str) -> bytes:
        path = os.path.join(self._path(workflow, run_id, ".blobs"), os.path.basename(ref))
        try:
            data = _frames.read_file(path)
        except FileNotFoundError:
            msg = f"the saved result {path} is gone (was the run deleted or pruned?)"
            raise StateError(msg, path=path) from None
        sealer = self.sealer(create=False)
        if sealer is None:
            raise StateError(_frames.problem_message(path, _frames.FOREIGN), path=path)
        frames, _, problem = sealer.scan(data, len(_frames.MAGIC))
        if problem is not None or len(frames) != 2:
            raise StateError(_frames.problem_message(path, problem or _frames.CORRUPT), path=path)
        (h_at, h_len), (at, length) = frames
        _frames.read_header(data[h_at : h_at + h_len], path)  # refuses a newer format
        return data[at : at + length]

    def result_folder(self, workflow: str, run_id: str) -> str | None:
        folder = self._path(workflow, run_id, ".blobs")
        _frames.make_dirs(folder)
        return folder

    def load_file(self, workflow: str, run_id: str, ref: str) -> Any:
        from .._resultfiles import load_file

        name, _, digest = ref.partition(":")
        path = os.path.join(self._path(workflow, run_id, ".blobs"), os.path.basename(name))
        if not digest:
            msg = f"the journal's record of {path} has no digest; run with fresh=True"
            raise StateError(msg, path=path)
        return load_file(path, digest)

    def rewrite_journal(self, workflow: str, run_id: str, payloads: list[bytes]) -> list[Any]:
        sealer = self.sealer()
        assert sealer is not None
        parts = [_frames.MAGIC]
        locations: list[Any] = []
        pos = len(_frames.MAGIC)
        for payload in payloads:
            frame = sealer.seal(payload)
            parts.append(frame)
            locations.append((pos + _frames.PAYLOAD_AT, len(payload)))
            pos += len(frame)
        _frames.write_atomic(
            self._path(workflow, run_id, ".journal"),
            b"".join(parts),
            fsync=self.durability == "fsync",
        )
        return locations


class _FileJournal(Journal):
    __slots__ = ("_path", "_fd", "_sealer", "_size", "_fsync")

    def __init__(
        self, path: str, sealer: _frames.Sealer, valid_end: int | None, *, fsync: bool
    ) -> None:
        self._path = path
        self._sealer = sealer
        self._fsync = fsync
        fd = _frames.open_state(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            st = _frames.check_owner(fd, path)
            size = st.st_size
            if valid_end is not None and size > valid_end >= len(_frames.MAGIC):
                os.ftruncate(fd, valid_end)  # drop a half-written tail before appending
                size = valid_end
            elif size < len(_frames.MAGIC):
                os.ftruncate(fd, 0)
                os.write(fd, _frames.MAGIC)
                size = len(_frames.MAGIC)
                if fsync:
                    os.fsync(fd)
                    _frames.sync_dir(os.path.dirname(path))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = size

    def append(self, payload: bytes) -> Any:
        frame = self._sealer.seal(payload)
        fd = self._fd
        start = self._size
        try:
            written = os.write(fd, frame)
            while written < len(frame):  # a short write: the disk is filling up
                written += os.write(fd, frame[written:])
            if self._fsync:
                os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # never leave a partial record behind a good one
            raise
        self._size = start + len(frame)
        return (start + _frames.PAYLOAD_AT, len(payload))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _unreadable(path: str, workflow: str | None, exc: Exception) -> UnreadableRun:
    """How a listing reports the summary in ``path`` that raised ``exc``."""
    try:
        modified: float | None = os.stat(path).st_mtime
    except OSError:
        modified = None
    if isinstance(exc, OSError):
        reason = (f"cannot read {path}: {exc.strerror or exc}; check its owner and "
                  "permissions")
    else:
        reason = str(exc)
    return UnreadableRun(
        workflow=workflow or os.path.basename(os.path.dirname(path)),
        run_id=os.path.basename(path)[: -len(".run")], where=path, reason=reason,
        modified=modified, problem=getattr(exc, "problem", None),
    )

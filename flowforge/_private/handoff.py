"""Large results between process workers by reference, not by copy.

A process worker whose result pickles (protocol 5) to out-of-band buffers of at least
the executor's ``share_threshold`` bytes in all (NumPy arrays, pandas and Arrow objects,
``PickleBuffer``) writes those buffers once to a file and sends the driver only a
:class:`SharedResult` handle (a path and a size). A consumer in another worker maps the
same file (``mmap``, copy-on-write) and unpickles with the mapped bytes as its buffers,
so a 200 MB array crosses without a pipe and without a copy. The driver never holds the
payload; it maps the file only when it needs the value itself (a thread or sequential
consumer, a condition, the returned ``RunResult``).

Where the file lives:

* autosave on, file store: in the run's ``<run_id>.blobs/`` folder of the state folder.
  That file *is* the saved result (journal kind ``SHARED``): written once, it serves the
  hand-off and the resume.
* otherwise: in ``/dev/shm`` (a memory file system), named
  ``flowforge-<driver pid>-<run id>-...``. The driver removes its run's files when the run
  ends (values it still returns stay mapped, so nothing is lost), and every run first
  removes files left by drivers that are gone (``kill -9``).

File layout: ``MAGIC | u64 header length | header | padding | buffers``, each buffer
64-byte aligned. The header is a marshal tuple ``(format, in-band pickle, layout,
CRC32 per buffer or None)``. The in-band pickle is what can run code: for a file kept in
the state folder the driver records the header's SHA-256 in the run's journal, which is
sealed with the folder's key, and a resume refuses a file whose header differs (and a
buffer whose CRC differs) before unpickling anything. No key ever leaves the driver.
Files are created 0600 and written under a temporary name, then renamed, so a reader
never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import marshal
import mmap
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "SHM_FOLDER", "Handle", "SharedResult", "Spill", "dump_outcome", "has_shared",
    "header_digest", "hold_run_lock", "load_shared", "map_inputs", "release_run_lock",
    "hold_all", "materialize", "materialize_inputs", "plan_spills", "remove_files",
    "remove_run_files", "run_prefix", "scratch_folder", "sweep_stale", "write_file",
]

MAGIC = b"FLOWFORGE-SHRD1\n"
SUFFIX = ".shr"
_ALIGN = 64
_HEAD = struct.Struct("<Q")
FORMAT = 2
_MIN_OUT_OF_BAND = 64 * 1024  # smaller buffers stay inside the pickle
_PLAIN = frozenset({int, float, str, bool, type(None), complex})
SHM_FOLDER = "/dev/shm" if os.path.isdir("/dev/shm") else None


class Spill(NamedTuple):
    """Where and from what size a worker writes a result to a file instead of a pipe."""

    folder: str
    prefix: str
    threshold: int
    checksum: bool  # a CRC32 per buffer, checked at resume: files kept in the state folder
    fsync: bool
    temporary: bool  # removed when the run ends (``/dev/shm``), not kept as saved state


class Handle:
    """A result held somewhere other than the driver's memory: in a file
    (:class:`SharedResult`) or on a Dask worker. ``load()`` brings the value here;
    ``file`` is the file it is saved in, if any."""

    __slots__ = ()

    def load(self) -> Any:
        raise NotImplementedError

    @property
    def file(self) -> SharedResult | None:
        return None


class SharedResult(Handle):
    """A handle to a result in a file: what the driver holds instead of the value."""

    __slots__ = ("path", "nbytes", "_value")
    _value: Any

    def __init__(self, path: str, nbytes: int) -> None:
        self.path = path
        self.nbytes = nbytes

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedResult, (self.path, self.nbytes))

    def load(self) -> Any:
        """The value, its buffers mapped from the file (kept after the first call)."""
        try:
            return self._value
        except AttributeError:
            value = self._value = load_shared(self.path)
            return value

    @property
    def file(self) -> SharedResult | None:
        return self

    def __repr__(self) -> str:
        return f"SharedResult({self.path!r}, {self.nbytes} bytes)"


def has_shared(value: Any) -> bool:
    """True when ``value`` is a handle or a list holding one (a mapped task's result)."""
    if isinstance(value, Handle):
        return True
    return type(value) is list and any(isinstance(v, Handle) for v in value)


def materialize(value: Any) -> Any:
    """``value`` with handles (at the top or in a list) replaced by what they hold."""
    if isinstance(value, Handle):
        return value.load()
    if type(value) is list and any(isinstance(v, Handle) for v in value):
        return [v.load() if isinstance(v, Handle) else v for v in value]
    return value


def map_inputs(kwargs: dict[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any]:
    """``kwargs`` of one attempt with ``convert`` applied to every input: each argument,
    and the ``inputs`` and ``previous`` of a ``ctx`` (replaced only when one changed)."""
    from .._task import TaskContext

    out = {}
    for name, value in kwargs.items():
        if isinstance(value, TaskContext):
            inputs = {k: convert(v) for k, v in value.inputs.items()}
            previous = convert(value.previous)
            if previous is not value.previous or any(
                inputs[k] is not v for k, v in value.inputs.items()
            ):
                value = dataclasses.replace(value, inputs=inputs, previous=previous)
        else:
            value = convert(value)
        out[name] = value
    return out


def materialize_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of one attempt with every handle replaced, in a ``ctx`` too."""
    return map_inputs(kwargs, materialize)


# -- the worker's side -----------------------------------------------------------------


def dump_outcome(value: Any, spill: Spill | None) -> bytes:
    """Pickle a successful outcome for the pipe; a large one goes to a file first."""
    import cloudpickle

    if spill is None or type(value) in _PLAIN:
        return cloudpickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    if type(value) in (bytes, bytearray) and len(value) < spill.threshold:
        return cloudpickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    inband, buffers = _split(value, _MIN_OUT_OF_BAND)
    total = sum(b.nbytes for b in buffers)
    if not buffers:
        return pickle.dumps(("pickled", inband), protocol=pickle.HIGHEST_PROTOCOL)
    if total < spill.threshold:
        return cloudpickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    path = _write(spill, inband, buffers)
    return pickle.dumps(("ok", SharedResult(path, total)), protocol=pickle.HIGHEST_PROTOCOL)


class _Raw:
    """A large ``bytes`` or ``bytearray`` result, pickled as one out-of-band buffer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (_rebuild_raw, (type(self.data) is bytearray, pickle.PickleBuffer(self.data)))


def _rebuild_raw(mutable: bool, buffer: Any) -> bytes | bytearray:
    return bytearray(buffer) if mutable else bytes(buffer)


def write_file(value: Any, spill: Spill) -> SharedResult:
    """Write ``value`` to a file of ``spill`` whatever its size or shape (a Dask worker
    saving a large result for resume); large buffers go out of band, as above."""
    inband, buffers = _split(value, 0)
    nbytes = len(inband) + sum(b.nbytes for b in buffers)
    return SharedResult(_write(spill, inband, buffers), nbytes)


def _split(value: Any, min_size: int) -> tuple[bytes, list[memoryview]]:
    """Pickle ``value`` with protocol 5: the in-band bytes, and its contiguous buffers of
    ``min_size`` bytes or more, left out of band (a ``bytes`` or ``bytearray`` value is
    one such buffer: pickle gives those no out-of-band form of their own)."""
    import cloudpickle

    if type(value) in (bytes, bytearray):
        value = _Raw(value)
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: keep it in the pickle
            return True
        if raw.nbytes < min_size:
            return True
        buffers.append(raw)
        return False

    return cloudpickle.dumps(value, protocol=5, buffer_callback=out_of_band), buffers


def _write(spill: Spill, inband: bytes, buffers: list[memoryview]) -> str:
    layout = []
    end = 0
    for buf in buffers:
        end = _aligned(end)
        layout.append((end, buf.nbytes, buf.readonly))
        end += buf.nbytes
    crcs = [zlib.crc32(buf) for buf in buffers] if spill.checksum else None
    meta = marshal.dumps((FORMAT, inband, layout, crcs))
    head = MAGIC + _HEAD.pack(len(meta)) + meta
    base = _aligned(len(head))
    path = os.path.join(spill.folder, f"{spill.prefix}{os.urandom(8).hex()}{SUFFIX}")
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, base + end)
        _pwrite_all(fd, memoryview(head), 0)
        for (offset, _, _), buf in zip(layout, buffers, strict=True):
            _pwrite_all(fd, buf, base + offset)
        if spill.fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if spill.fsync:
        from ..persistence._frames import sync_dir

        sync_dir(spill.folder)
    return path


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    data = data.cast("B") if data.format != "B" else data
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


# -- reading ---------------------------------------------------------------------------


def header_digest(path: str) -> str:
    """SHA-256 of a file's header (format, in-band pickle, layout, checksums). The driver
    records it in the run's sealed journal: at resume, a file whose header differs is
    refused before anything in it is unpickled."""
    import hashlib  # here: process workers, which never call this, start sooner

    with open(path, "rb", opener=_no_follow) as f:
        start = f.read(len(MAGIC) + _HEAD.size)
        (meta_len,) = _HEAD.unpack_from(start, len(MAGIC))
        return hashlib.sha256(f.read(meta_len)).hexdigest()


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def load_shared(path: str, digest: str | None = None) -> Any:
    """Map ``path`` and unpickle its value over the mapped bytes. With ``digest`` (a file
    saved in the state folder, loaded at resume) the header must match it and every
    buffer its checksum; a hand-off within a run skips both."""
    from ..errors import StateError
    from ..persistence._frames import check_owner

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        msg = f"the shared result {path} is gone (was the run deleted, or cleaned up?)"
        raise StateError(msg, path=path) from None
    try:
        size = check_owner(fd, path).st_size
        if size < len(MAGIC) + _HEAD.size:
            raise StateError(f"{path} is too short to be a FlowForge shared result", path=path)
        mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    view = memoryview(mapped)
    parsed = _parse(view, size, digest)
    if isinstance(parsed, str):
        msg = f"{path} {parsed}; delete it, or run with fresh=True to compute it again"
        raise StateError(msg, path=path)
    return parsed


def _same_digest(meta: memoryview, digest: str) -> bool:
    import hashlib
    import hmac

    return hmac.compare_digest(hashlib.sha256(meta).hexdigest(), digest)


def _parse(view: memoryview, size: int, digest: str | None) -> Any:
    """The value in a mapped file, or why it cannot be trusted."""
    if bytes(view[: len(MAGIC)]) != MAGIC:
        return "is not a FlowForge shared result (wrong magic)"
    (meta_len,) = _HEAD.unpack_from(view, len(MAGIC))
    at = len(MAGIC) + _HEAD.size
    if at + meta_len > size:
        return "is truncated"
    meta = view[at : at + meta_len]
    if digest is not None and not _same_digest(meta, digest):
        return "is not the file this run saved (its header differs from the journal's record)"
    try:
        version, inband, layout, crcs = marshal.loads(meta)
    except (ValueError, EOFError, TypeError):
        return "has a damaged header"
    if version != FORMAT:
        return f"has format {version}, which this FlowForge does not read"
    base = _aligned(at + meta_len)
    if any(base + offset + length > size for offset, length, _ in layout):
        return "is truncated"
    buffers = []
    for i, (offset, length, readonly) in enumerate(layout):
        piece = view[base + offset : base + offset + length]
        if digest is not None and crcs is not None and zlib.crc32(piece) != crcs[i]:
            return f"has damaged data (buffer {i} fails its checksum)"
        buffers.append(piece.toreadonly() if readonly else piece)
    return pickle.loads(inband, buffers=buffers)


# -- the driver's side -----------------------------------------------------------------


def plan_spills(executors: Any, session: Any, run_id: str) -> dict[Any, Spill]:
    """Each executor of a run with a ``share_threshold``: where its workers write large
    results. In the run's state folder when the store has one (the file is then the
    saved result); else, for process workers on this machine, in ``/dev/shm`` (first
    clearing files that killed drivers left). A cluster's workers (``on_cluster``) keep
    large results themselves and write a file only to save one."""
    from ..executors.base import SharesResults

    sharing = [(ex, ex.share_threshold) for ex in executors
               if isinstance(ex, SharesResults) and ex.share_threshold is not None]
    if not sharing:
        return {}
    saved: Spill | None = None
    if session is not None:
        folder = session.shared_folder()
        if folder is not None:
            saved = Spill(folder, "s-", 0, True, session.store.durability == "fsync", False)
    spills = {}
    for ex, threshold in sharing:
        if saved is not None:
            spills[ex] = saved._replace(threshold=threshold)
        elif not ex.on_cluster:
            folder = scratch_folder()
            if not spills:
                sweep_stale(folder)
                hold_run_lock(folder, run_prefix(run_id))
            spills[ex] = Spill(folder, run_prefix(run_id), threshold, False, False, True)
    return spills


def scratch_folder() -> str:
    """Where this machine's short-lived files go: ``/dev/shm`` (memory) where there is
    one, else the temporary folder."""
    if SHM_FOLDER is not None:
        return SHM_FOLDER
    import tempfile

    return tempfile.gettempdir()


def hold_all(results: dict[str, Any]) -> None:
    """At the end of a run, before its executors stop: map or fetch every result still
    held as a handle into ``results`` (mapped values stay valid once files are gone)."""
    for name, value in list(results.items()):
        if has_shared(value):
            try:
                results[name] = materialize(value)
            except Exception:  # pragma: no cover - gone under us: keep the handle
                continue


def remove_files(spills: dict[Any, Spill]) -> None:
    """After a run's workers stopped: delete its temporary files (in ``/dev/shm``), and
    any file a crashed worker left half-written."""
    for spill in set(spills.values()):
        if spill.temporary:
            remove_run_files(spill.folder, spill.prefix)  # the lock file too
            release_run_lock(spill.prefix)
        else:
            remove_run_files(spill.folder, spill.prefix, "*.tmp")


# -- cleaning up -----------------------------------------------------------------------


def run_prefix(run_id: str) -> str:
    """The name prefix of this driver's files for ``run_id`` in ``/dev/shm``."""
    return f"flowforge-{os.getpid()}-{run_id}-"


def remove_run_files(folder: str, prefix: str, pattern: str = "*") -> int:
    """Delete the files of one run (and unfinished ``.tmp`` ones); how many were removed."""
    removed = 0
    for path in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + pattern)):
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    return removed


_LOCKS: dict[str, int] = {}  # run prefix -> the open, locked "lock" file of a live run
_ORPHAN_AGE = 3600.0  # a file with no lock file beside it is left alone for this long


def hold_run_lock(folder: str, prefix: str) -> None:
    """Create and lock ``<prefix>lock`` for as long as this run lives: a sweeper that can
    take the lock knows the run's driver is gone (in any PID namespace: the lock is on
    the file, not on a pid)."""
    import fcntl

    if prefix in _LOCKS:
        return
    fd = os.open(os.path.join(folder, prefix + "lock"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _LOCKS[prefix] = fd


def release_run_lock(prefix: str) -> None:
    fd = _LOCKS.pop(prefix, None)
    if fd is not None:
        os.close(fd)


def sweep_stale(folder: str | None = SHM_FOLDER) -> int:
    """Delete ``/dev/shm`` files of runs whose driver is gone (``kill -9``): those whose
    lock file nobody holds. Only this user's regular files; symlinks are left alone."""
    if folder is None:
        return 0
    import fcntl
    import stat
    import time

    removed = 0
    live: set[str] = set()
    for lock in glob.glob(os.path.join(folder, "flowforge-*-lock")):
        prefix = os.path.basename(lock)[: -len("lock")]
        if prefix in _LOCKS or not _ours(lock):
            live.add(prefix)
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            live.add(prefix)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            live.add(prefix)  # its driver holds it: still running
            continue
        finally:
            os.close(fd)
        removed += remove_run_files(folder, prefix)
    now = time.time()
    for path in glob.glob(os.path.join(folder, "flowforge-*")):
        name = os.path.basename(path)
        if any(name.startswith(p) for p in live):
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() \
                and now - st.st_mtime > _ORPHAN_AGE:
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += 1
    return removed


def _ours(path: str) -> bool:
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()

"""The result file: a large result written once by a worker and mapped by its readers.

A process worker whose result pickles (protocol 5) to out-of-band buffers of at least
its :class:`FilePolicy`'s ``threshold`` bytes in all (NumPy arrays, pandas and Arrow
objects, ``PickleBuffer``) writes those buffers once to a file and sends the driver only
a :class:`~flowforge._resultfiles.handles.ResultFile` handle (a path and a size). A
consumer in another worker maps the same file (``mmap``, copy-on-write) and unpickles
with the mapped bytes as its buffers, so a 200 MB array crosses without a pipe and
without a copy.

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
import marshal
import mmap
import os
import pickle
import struct
import zlib
from typing import Any, NamedTuple

from .handles import Handle

__all__ = [
    "MAGIC", "SUFFIX", "FilePolicy", "ResultFile", "dump_outcome", "header_digest", "load_file",
    "write_file",
]

MAGIC = b"FLOWFORGE-SHRD1\n"
SUFFIX = ".shr"
_ALIGN = 64
_HEAD = struct.Struct("<Q")
FORMAT = 2
_MIN_OUT_OF_BAND = 64 * 1024  # smaller buffers stay inside the pickle
_PLAIN = frozenset({int, float, str, bool, type(None), complex})


class FilePolicy(NamedTuple):
    """Where, and from what size on, a worker writes a result to a file instead of the
    pipe; whether the file gets checksums and an fsync (kept as saved state), or is
    temporary (removed when the run ends)."""

    folder: str
    prefix: str
    threshold: int
    checksum: bool  # a CRC32 per buffer, checked at resume: files kept in the state folder
    fsync: bool
    temporary: bool  # removed when the run ends (``/dev/shm``), not kept as saved state



class ResultFile(Handle):
    """A handle to a result in a file: what the driver holds instead of the value."""

    __slots__ = ("path", "nbytes", "_value")
    _value: Any

    def __init__(self, path: str, nbytes: int) -> None:
        self.path = path
        self.nbytes = nbytes

    def __reduce__(self) -> tuple[Any, ...]:
        return (ResultFile, (self.path, self.nbytes))

    def load(self) -> Any:
        """The value, its buffers mapped from the file (kept after the first call)."""
        try:
            return self._value
        except AttributeError:
            value = self._value = load_file(self.path)
            return value

    @property
    def file(self) -> ResultFile | None:
        return self

    def __repr__(self) -> str:
        return f"ResultFile({self.path!r}, {self.nbytes} bytes)"


# -- writing ---------------------------------------------------------------------------


def dump_outcome(value: Any, policy: FilePolicy | None) -> bytes:
    """Pickle a successful outcome for the pipe; a large one goes to a file first."""
    import cloudpickle

    if policy is None or type(value) in _PLAIN:
        return cloudpickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    if type(value) in (bytes, bytearray) and len(value) < policy.threshold:
        return cloudpickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    inband, buffers = _split(value, _MIN_OUT_OF_BAND)
    total = sum(b.nbytes for b in buffers)
    if not buffers:
        return pickle.dumps(("pickled", inband), protocol=pickle.HIGHEST_PROTOCOL)
    if total < policy.threshold:
        return cloudpickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    path = _write(policy, inband, buffers)
    return pickle.dumps(("ok", ResultFile(path, total)), protocol=pickle.HIGHEST_PROTOCOL)


class _Raw:
    """A large ``bytes`` or ``bytearray`` result, pickled as one out-of-band buffer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (_rebuild_raw, (type(self.data) is bytearray, pickle.PickleBuffer(self.data)))


def _rebuild_raw(mutable: bool, buffer: Any) -> bytes | bytearray:
    return bytearray(buffer) if mutable else bytes(buffer)


def write_file(value: Any, policy: FilePolicy) -> ResultFile:
    """Write ``value`` to a file of ``policy`` whatever its size or shape (a Dask worker
    saving a large result for resume); large buffers go out of band, as above."""
    inband, buffers = _split(value, 0)
    nbytes = len(inband) + sum(b.nbytes for b in buffers)
    return ResultFile(_write(policy, inband, buffers), nbytes)


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


def _write(policy: FilePolicy, inband: bytes, buffers: list[memoryview]) -> str:
    layout = []
    end = 0
    for buf in buffers:
        end = _aligned(end)
        layout.append((end, buf.nbytes, buf.readonly))
        end += buf.nbytes
    crcs = [zlib.crc32(buf) for buf in buffers] if policy.checksum else None
    meta = marshal.dumps((FORMAT, inband, layout, crcs))
    head = MAGIC + _HEAD.pack(len(meta)) + meta
    base = _aligned(len(head))
    path = os.path.join(policy.folder, f"{policy.prefix}{os.urandom(8).hex()}{SUFFIX}")
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, base + end)
        _pwrite_all(fd, memoryview(head), 0)
        for (offset, _, _), buf in zip(layout, buffers, strict=True):
            _pwrite_all(fd, buf, base + offset)
        if policy.fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if policy.fsync:
        from ..persistence._frames import sync_dir

        sync_dir(policy.folder)
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


def load_file(path: str, digest: str | None = None) -> Any:
    """Map ``path`` and unpickle its value over the mapped bytes. With ``digest`` (a file
    saved in the state folder, loaded at resume) the header must match it and every
    buffer its checksum; a hand-off within a run skips both."""
    from ..errors import StateError
    from ..persistence._frames import check_owner

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        msg = f"the result file {path} is gone (was the run deleted, or cleaned up?)"
        raise StateError(msg, path=path) from None
    try:
        size = check_owner(fd, path).st_size
        if size < len(MAGIC) + _HEAD.size:
            raise StateError(f"{path} is too short to be a FlowForge result file", path=path)
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
        return "is not a FlowForge result file (wrong magic)"
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

"""The on-disk grammar shared by every store: signed frames, headers, the key, owner checks.

A state file is ``MAGIC`` followed by frames. A frame is::

    length (4 bytes, big-endian) | crc32(payload) (4) | payload
    | HMAC-SHA256(key, length|crc|payload) (32)

The length and CRC catch a frame cut short by a crash or damaged on disk; the HMAC,
keyed by a secret in the state folder that only its owner can read, catches a frame
written by anyone else. Nothing is unpickled before both pass. The first frame of a
journal segment is a JSON header (``format``, ``python``, ``cloudpickle``); pickled
payloads are told from it by their first byte.
"""

from __future__ import annotations

import errno
import hmac
import json
import os
import secrets
import struct
import sys
import zlib
from functools import lru_cache
from typing import Any

from ..errors import StateError

#: Every state file starts with this marker; the digit is the frame layout's version.
MAGIC = b"FLOWFORGE-STAT2\n"
FORMAT_VERSION = 2
_OLD_MAGIC = {b"FLOWFORGE-STATE\n": 1}
KEY_FILE = ".flowforge-key"
FILE_MODE = 0o600
DIR_MODE = 0o700

_HEAD = struct.Struct(">II")
_MAC_SIZE = 32
OVERHEAD = _HEAD.size + _MAC_SIZE
#: Where a frame's payload starts, counted from the frame's first byte.
PAYLOAD_AT = _HEAD.size

#: How far before the end of a damaged journal a good last record is looked for: a task
#: record with a result kept inline (larger ones go to blob files) and its envelope.
MAX_FRAME = 2 * 2**20

#: Why a scan stopped before the end of the data.
TORN = "torn"  # the last frame is incomplete: a crash while it was written
CORRUPT = "corrupt"  # a frame's checksum fails with more data after it
FOREIGN = "foreign"  # a frame's checksum holds but its signature does not


class Sealer:
    """Seals payloads into frames with the state folder's key, and checks them back."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, payload: bytes) -> bytes:
        signed = _HEAD.pack(len(payload), zlib.crc32(payload)) + payload
        return signed + hmac.digest(self._key, signed, "sha256")

    def scan(self, data: bytes, start: int = 0) -> tuple[list[tuple[int, int]], int, str | None]:
        """Walk the frames of ``data`` from ``start``.

        Returns ``(frames, end, problem)``: ``frames`` are ``(offset, length)`` of each
        verified payload, ``end`` is where the verified data stops and ``problem`` is
        None, :data:`TORN`, :data:`CORRUPT` or :data:`FOREIGN` for what lies after ``end``.
        """
        frames: list[tuple[int, int]] = []
        append = frames.append
        key = self._key
        size = len(data)
        view = memoryview(data)
        pos = start
        unpack = _HEAD.unpack_from
        digest = hmac.digest
        compare = hmac.compare_digest
        head, mac_size, overhead = _HEAD.size, _MAC_SIZE, OVERHEAD
        # The hot loop of a resume (100,000 frames): the signature is checked first, and
        # the checksum only read to tell why a frame that fails it is bad.
        while pos < size:
            if size - pos < overhead:
                return frames, pos, TORN
            length = unpack(data, pos)[0]
            signed_end = pos + head + length
            end = signed_end + mac_size
            if end > size:
                return frames, pos, self._torn_or_corrupt(data, pos)
            if not compare(digest(key, view[pos:signed_end], "sha256"), view[signed_end:end]):
                return frames, pos, self._why_bad(data, pos, end)
            append((pos + head, length))
            pos = end
        return frames, pos, None

    def _why_bad(self, data: bytes, pos: int, end: int) -> str:
        """A frame failed its signature: torn, corrupt, or signed by someone else?"""
        length, crc = _HEAD.unpack_from(data, pos)
        body = pos + _HEAD.size
        if zlib.crc32(data[body : body + length]) != crc or (length == 0 and crc == 0):
            torn = end == len(data) or not data[pos:].strip(b"\0")
            return self._torn_or_corrupt(data, pos) if torn else CORRUPT
        return FOREIGN

    def _torn_or_corrupt(self, data: bytes, pos: int) -> str:
        """The bad data from ``pos`` on is a torn tail only if no good frame follows it:
        a crash leaves one half-written frame at the end. A damaged length or checksum
        further up, with records after it, is corruption, and no record after it is
        dropped. (Good records end the file: the last starts within ``MAX_FRAME`` of its
        end, so only that much is searched.)"""
        size = len(data)
        unpack = _HEAD.unpack_from
        view = memoryview(data)
        first = max(pos + 1, size - MAX_FRAME)
        for p in range(first, size - OVERHEAD + 1):  # a later frame that ends the file
            if unpack(data, p)[0] == size - p - OVERHEAD:
                signed_end = size - _MAC_SIZE
                if hmac.compare_digest(hmac.digest(self._key, view[p:signed_end], "sha256"),
                                       view[signed_end:size]):
                    return CORRUPT
        return TORN

    def open_one(self, frame: bytes, where: str) -> bytes:
        """The payload of a single stored frame, or :class:`StateError` naming ``where``."""
        frames, _, problem = self.scan(frame)
        if problem is not None or len(frames) != 1:
            raise StateError(problem_message(where, problem or CORRUPT), path=where,
                             problem=problem or CORRUPT)
        offset, length = frames[0]
        return frame[offset : offset + length]


def swapped_message(where: str, found: str, expected: str) -> str:
    """A state file that belongs to another run than the one it is named for."""
    return (f"state file {where} belongs to run {found!r}, not run {expected!r} (copied "
            "over it?); it was not loaded")


def problem_message(where: str, problem: str) -> str:
    if problem == FOREIGN:
        return (
            f"state file {where} holds a record not signed with this state folder's key "
            "(written by another user, another state folder or tampered with); it was not "
            "loaded. Delete the run (PersistenceManager(state_dir).delete(run_id)) or run "
            "with fresh=True"
        )
    if problem == TORN:
        return f"state file {where} ends in a half-written record"
    return (
        f"state file {where} is corrupt (a record's checksum does not match); it was not "
        "loaded. Delete the run (PersistenceManager(state_dir).delete(run_id)) or run with "
        "fresh=True"
    )


def header(*, versions: dict[str, str] | None = None, **extra: Any) -> bytes:
    """A JSON header payload naming the versions that wrote what follows it
    (these, by default)."""
    found = current_versions() if versions is None else versions
    return json.dumps({"format": FORMAT_VERSION, **found, **extra}, separators=(",", ":")).encode()


def is_header(payload: bytes | memoryview) -> bool:
    return payload[:1] == b"{"


def read_header(payload: bytes | memoryview, where: str) -> dict[str, Any]:
    try:
        head = json.loads(bytes(payload))
        fmt = head["format"]
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"state file {where} has an unreadable header ({exc}); delete it or run fresh"
        raise StateError(msg, path=where) from exc
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        msg = (
            f"state file {where} was written in state format {fmt}, newer than this "
            f"FlowForge reads ({FORMAT_VERSION}); upgrade FlowForge, or run with fresh=True "
            "to leave it alone"
        )
        raise StateError(msg, path=where, format=fmt)
    return dict(head)


@lru_cache(maxsize=1)
def current_versions() -> dict[str, str]:
    """The versions a pickled result depends on: Python and cloudpickle."""
    return {"python": sys.version.split()[0], "cloudpickle": _cloudpickle_version()}


def _cloudpickle_version() -> str:
    """cloudpickle's version without importing it (26 ms) or scanning every installed
    distribution (``importlib.metadata``, 10-25 ms): read its ``.dist-info`` folder name."""
    loaded = sys.modules.get("cloudpickle")
    if loaded is not None:
        return str(getattr(loaded, "__version__", "unknown"))
    from importlib.util import find_spec

    spec = find_spec("cloudpickle")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if locations:
        site = os.path.dirname(os.path.abspath(locations[0]))
        try:
            names = os.listdir(site)
        except OSError:
            names = []
        for name in names:
            if name.startswith("cloudpickle-") and name.endswith(".dist-info"):
                return name[len("cloudpickle-") : -len(".dist-info")]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudpickle")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        return "absent"


def open_state(path: str, flags: int = os.O_RDONLY, mode: int = FILE_MODE) -> int:
    """``os.open`` for a state file, never through a symbolic link: one that is a link
    (put there to redirect a run) is a StateError naming it."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        msg = (f"state file {path} is a symbolic link; FlowForge opens only files it "
               "wrote itself. Remove the link (and check who made it)")
        raise StateError(msg, path=path) from None


def check_owner(fd: int, where: str) -> os.stat_result:
    """Refuse a file that another user owns or that others may write to."""
    st = os.fstat(fd)
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        msg = (
            f"state file {where} belongs to user id {st.st_uid}, not to you (user id "
            f"{os.geteuid()}); FlowForge loads only state it wrote itself. Remove it, or "
            "use a state_dir of your own"
        )
        raise StateError(msg, path=where, owner=st.st_uid)
    if st.st_mode & 0o022:
        msg = (
            f"state file {where} can be written by other users (mode "
            f"{oct(st.st_mode & 0o777)}); FlowForge will not trust it. Run `chmod 600` on it "
            "or delete it"
        )
        raise StateError(msg, path=where, mode=st.st_mode & 0o777)
    return st


def read_file(path: str) -> bytes:
    """The bytes of a state file we own, after its magic; StateError otherwise."""
    fd = open_state(path)
    try:
        check_owner(fd, path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 22)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            return b""  # created but the magic never fully landed: an empty file
        old = _OLD_MAGIC.get(data[: len(MAGIC)])
        if old is not None:
            msg = (
                f"state file {path} is in state format {old}, which this FlowForge (format "
                f"{FORMAT_VERSION}) no longer reads; run with fresh=True, or delete the run "
                "(PersistenceManager(state_dir).delete(run_id))"
            )
            raise StateError(msg, path=path, format=old)
        msg = (
            f"{path} is not a FlowForge state file (it does not start with the FlowForge "
            "marker); move it out of the state folder"
        )
        raise StateError(msg, path=path)
    return data


def load_key(state_dir: str, *, create: bool) -> bytes | None:
    """The state folder's HMAC key, made (owner-only) on first use when ``create``."""
    path = os.path.join(state_dir, KEY_FILE)
    try:
        fd = open_state(path)
    except FileNotFoundError:
        if not create:
            return None
        make_dirs(state_dir)
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE)
        try:
            os.write(wfd, secrets.token_bytes(32))
            os.fsync(wfd)
        finally:
            os.close(wfd)
        try:
            os.link(tmp, path)  # fails if another process made the key first: use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return load_key(state_dir, create=False)
    try:
        st = check_owner(fd, path)
        if st.st_mode & 0o077:
            msg = (
                f"the state key {path} can be read by other users (mode "
                f"{oct(st.st_mode & 0o777)}), so they could forge state; run "
                f"`chmod 600 {path}`"
            )
            raise StateError(msg, path=path)
        key = os.read(fd, 64)
    finally:
        os.close(fd)
    if len(key) != 32:
        msg = (
            f"the state key {path} is damaged (not 32 bytes); delete it together with the "
            "saved runs it signed"
        )
        raise StateError(msg, path=path)
    return key


def check_folder(path: str) -> None:
    """Refuse a state folder another user owns or others may write to (they could swap
    its files); a group-writable one only as a team's setgid folder, with a warning."""
    if not hasattr(os, "geteuid"):  # pragma: no cover - not POSIX
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # made by us, owner-only, when first written
    except OSError as exc:
        raise StateError(f"state folder {path} cannot be read ({exc.strerror})",
                         path=path) from None
    import stat

    shown = os.path.relpath(path) if not os.path.isabs(path) else path
    if st.st_uid != os.geteuid():
        msg = (f"state folder {path} belongs to user id {st.st_uid}, not to you (user id "
               f"{os.geteuid()}): its files could be swapped under you. Use a state_dir of "
               "your own")
        raise StateError(msg, path=path, owner=st.st_uid)
    mode = st.st_mode & 0o7777
    if mode & 0o002 or (mode & 0o020 and not mode & stat.S_ISGID):
        who = "any user" if mode & 0o002 else "its group"
        msg = (f"state folder {path} can be written by {who} (mode {oct(mode)}): its files "
               f"could be swapped under you. Run `chmod 700 {shown}` (a team's shared "
               "folder: group-writable with setgid, `chmod 2770`)")
        raise StateError(msg, path=path, mode=mode)
    if mode & 0o020:
        import warnings

        warnings.warn(f"state folder {path} is group-writable (a setgid team folder): "
                      "members of its group can change this run's state", stacklevel=3)


def make_dirs(path: str) -> None:
    """Create ``path`` and any missing parents, each readable by its owner only."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if parent != path:
        make_dirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def write_atomic(path: str, data: bytes, *, fsync: bool) -> None:
    """Replace ``path`` by ``data`` all at once: a reader sees the old file or the new.

    The temporary file has a random name and is created with ``O_EXCL | O_NOFOLLOW``: a
    file or symlink another user planted under a name they could guess is never
    written through (the open fails instead)."""
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if fsync:
        sync_dir(os.path.dirname(path))


def sync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)

"""Where a run's result files go, and cleaning them up.

* Autosave on, file store: in the run's ``<run_id>.blobs/`` folder of the state folder.
  That file *is* the saved result (journal kind ``RESULT_FILE``): written once, it serves the
  hand-over between workers and the resume.
* Otherwise: in ``/dev/shm`` (a memory file system), named
  ``flowforge-<driver pid>-<run id>-...``. The driver removes its run's files when the
  run ends (values it still returns stay mapped, so nothing is lost), and every run
  first removes files left by drivers that are gone (``kill -9``).
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Any

from .format import FilePolicy

__all__ = ["SHM_FOLDER", "hold_run_lock", "plan_files", "release_run_lock", "remove_files",
           "remove_run_files", "run_prefix", "scratch_folder", "sweep_stale"]

SHM_FOLDER = "/dev/shm" if os.path.isdir("/dev/shm") else None


def plan_files(executors: Any, session: Any, run_id: str) -> dict[Any, FilePolicy]:
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
    saved: FilePolicy | None = None
    if session is not None:
        folder = session.result_folder()
        if folder is not None:
            saved = FilePolicy(folder, "s-", 0, True, session.store.durability == "fsync", False)
    policies = {}
    for ex, threshold in sharing:
        if saved is not None:
            policies[ex] = saved._replace(threshold=threshold)
        elif not ex.on_cluster:
            folder = scratch_folder()
            if not policies:
                sweep_stale(folder)
                hold_run_lock(folder, run_prefix(run_id))
            policies[ex] = FilePolicy(folder, run_prefix(run_id), threshold, False, False, True)
    return policies


def scratch_folder() -> str:
    """Where this machine's short-lived files go: ``/dev/shm`` (memory) where there is
    one, else the temporary folder."""
    if SHM_FOLDER is not None:
        return SHM_FOLDER
    import tempfile

    return tempfile.gettempdir()


def remove_files(policies: dict[Any, FilePolicy]) -> None:
    """After a run's workers stopped: delete its temporary files (in ``/dev/shm``), and
    any file a crashed worker left half-written."""
    for policy in set(policies.values()):
        if policy.temporary:
            remove_run_files(policy.folder, policy.prefix)  # the lock file too
            release_run_lock(policy.prefix)
        else:
            remove_run_files(policy.folder, policy.prefix, "*.tmp")


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

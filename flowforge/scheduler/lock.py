"""One scheduler per state folder: the scheduler lock.

Two schedulers on one state folder would both fire every job (only the workflow lock
would stop the second run, with errors in the log). ``Scheduler.run()`` and ``flowforge
schedule`` hold ``<state>/scheduler/.lock`` while they schedule: an OS file lock, which
dies with its process, plus a note saying who holds it. A second one is refused at once
with :class:`SchedulerLockedError` naming the holder's pid, before it changes the job
table; ``Scheduler.add()`` in another process is refused the same way while one runs.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ScheduleError
from ..persistence import _frames
from ..persistence.store import owner_alive, read_owner, write_owner

__all__ = ["SchedulerLock", "SchedulerLockedError"]


class SchedulerLockedError(ScheduleError):
    """Another scheduler runs on this state folder; ``pid`` is its process."""


class SchedulerLock:
    """The scheduler lock of one state folder (see the module docstring)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(os.fspath(state_dir), "scheduler", ".lock")
        self._lock: Any = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self) -> None:
        """Hold the lock, or raise :class:`SchedulerLockedError` at once."""
        if self._lock is not None:
            return
        from filelock import FileLock, Timeout

        _frames.make_dirs(os.path.dirname(self.path))
        lock = FileLock(self.path, timeout=0, mode=_frames.FILE_MODE, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise self._error() from None
        self._lock = lock
        write_owner(self.path)

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            try:
                os.unlink(self.path + ".owner")
            except OSError:
                pass
            lock.release()

    def check_free(self) -> None:
        """Raise :class:`SchedulerLockedError` if another live process holds the lock."""
        if self._lock is None and self._holder(wait=False) is not None:
            raise self._error()

    def _holder(self, *, wait: bool) -> dict[str, Any] | None:
        """The holder's note, if a live process other than this one holds the lock;
        ``wait``: the lock is held, so wait up to a second for its note to appear."""
        note = read_owner(self.path, wait=1.0 if wait else 0.0)
        if note is None or note.get("pid") == os.getpid() or not owner_alive(note):
            return None
        return note

    def _error(self) -> SchedulerLockedError:
        note = self._holder(wait=True) or {}
        pid = note.get("pid")
        who = f"process {pid}" if pid else "another process"
        msg = (f"another scheduler ({who}) runs on state folder "
               f"{os.path.dirname(os.path.dirname(self.path))!r}; stop it first, or give "
               "this one another state folder")
        return SchedulerLockedError(msg, field="state_dir", value=pid)

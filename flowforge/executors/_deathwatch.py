"""Noticing a process worker's death itself, not through its pipes.

Loky learns that a worker died when the worker's pipes reach end-of-file. A task that
forked keeps those pipes open in its child, so a worker that died (``os._exit``, a
crash) looked alive until that child exited: seconds, or for ever for a daemon, and a
timed attempt was then reported as timed out rather than crashed. Each worker is the
leader of its own process group (see ``init_worker``), which the children its tasks
start join. :class:`DeathWatch` waits on a pidfd per worker (Linux), one daemon thread
per executor that sleeps until a worker exits; it then ends the rest of that worker's
process group, which closes the pipes it held, so loky reports the crash at once.

Children that left the group (``start_new_session=True``, ``setsid``) are not found
this way and are not ended.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading

__all__ = ["DeathWatch", "end_group"]


def end_group(pid: int) -> None:
    """SIGKILL every process left in the group that worker ``pid`` leads."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class DeathWatch:
    """Ends a worker's process group as soon as the worker exits (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}  # pidfd -> worker pid
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    def watch(self, pid: int) -> None:
        """Watch worker ``pid`` (a no-op where pidfds do not exist)."""
        opener = getattr(os, "pidfd_open", None)
        if opener is None:  # pragma: no cover - not Linux 5.3+
            return
        try:
            fd = opener(pid)
        except OSError:  # already gone: end what it left
            end_group(pid)
            return
        with self._lock:
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe()
                self._thread = threading.Thread(target=self._run, name="flowforge-deathwatch",
                                                daemon=True)
                self._thread.start()
            self._fds[fd] = pid
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Stop watching (the workers' groups are left as they are)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            os.write(self._wake_w, b"q")
        thread.join(timeout=5)

    def _run(self) -> None:
        wake = self._wake_r
        while True:
            poller = select.poll()
            poller.register(wake, select.POLLIN)
            with self._lock:
                for fd in self._fds:
                    poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll():
                if fd == wake:
                    if b"q" in os.read(wake, 64):
                        self._shut()
                        return
                    continue
                with self._lock:
                    pid = self._fds.pop(fd, None)
                os.close(fd)
                if pid is not None:
                    end_group(pid)

    def _shut(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
            for fd in fds:
                os.close(fd)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

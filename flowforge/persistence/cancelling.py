"""The cancel channel: how a process asks a run, running in another process or thread,
to stop.

A request is a small JSON file beside the workflow's lock in the state folder (see
:meth:`StateStore.cancel_path <flowforge.persistence.store.StateStore.cancel_path>`):
who asked, their pid, whether to force. :func:`request_cancel` writes it atomically
(``flowforge cancel``, the dashboard). The driver running the run watches for it
(:data:`WATCH`: one daemon thread per process, alive only while runs are watched, that
looks at each watched run's file every ``POLL_SECONDS``) and hands it to the run's cancel
token; the run then stops as after Ctrl-C, ends ``cancelled`` with the asker named in
its reason, and removes the file.

Unlike a signal, a request reaches the right run whatever thread runs it (a scheduler's
thread, a web server's) and whatever the process does with SIGINT, and it leaves the
rest of the process alone: a scheduler whose run is cancelled keeps scheduling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _frames

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["POLL_SECONDS", "WATCH", "CancelRequest", "CancelWatch", "request_cancel"]

_log = logging.getLogger(__name__)

#: How often a running driver looks for a cancel request (seconds).
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class CancelRequest:
    """One request to cancel a run: ``who`` asked ("the command line", "the
    dashboard"), from process ``pid``; ``force`` also ends the attempts' child
    processes."""

    who: str
    pid: int | None = None
    force: bool = False

    @property
    def reason(self) -> str:
        """What the cancelled run and its tasks are told."""
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"cancelled from {self.who}{pid}"

    def to_json(self) -> bytes:
        return json.dumps({"who": self.who, "pid": self.pid, "force": self.force,
                           "at": time.time()}).encode()

    @classmethod
    def read(cls, path: str) -> CancelRequest | None:
        """The request in file ``path``; None if there is none. A file that is not a
        request (truncated, foreign) still asks to cancel, with no name."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        try:
            note = json.loads(data)
            who = str(note["who"])[:200]
            pid = note.get("pid")
            return cls(who, int(pid) if isinstance(pid, int) else None, note.get("force") is True)
        except (ValueError, KeyError, TypeError):
            return cls("an unreadable request")


def request_cancel(store: StateStore, workflow: str, run_id: str, request: CancelRequest) -> str:
    """Ask the driver of ``run_id`` to cancel it; returns the request file's path."""
    path = store.cancel_path(workflow, run_id)
    _frames.make_dirs(os.path.dirname(path))
    _frames.write_atomic(path, request.to_json(), fsync=False)
    return path


class CancelWatch:
    """Watches request files on one daemon thread, calling each one's callback once."""

    def __init__(self, poll: float = POLL_SECONDS) -> None:
        self._poll = poll
        self._watched: dict[str, Callable[[CancelRequest], Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, path: str, callback: Callable[[CancelRequest], Any]) -> Callable[[], None]:
        """Call ``callback`` (on the watch's thread) when a request appears at ``path``;
        returns what stops watching it and removes the file. A request left from before
        (its run was killed) is removed first: it asked another driver."""
        with contextlib.suppress(OSError):
            os.unlink(path)
        with self._lock:
            self._watched[path] = callback
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="flowforge-cancel-watch", daemon=True
                )
                self._thread.start()

        def stop() -> None:
            with self._lock:
                self._watched.pop(path, None)
            with contextlib.suppress(OSError):
                os.unlink(path)

        return stop

    def _run(self) -> None:
        while True:
            time.sleep(self._poll)
            with self._lock:
                if not self._watched:
                    self._thread = None
                    return
                watched = list(self._watched.items())
            for path, callback in watched:
                if not os.path.exists(path):
                    continue
                request = CancelRequest.read(path)
                with self._lock:
                    if self._watched.pop(path, None) is None:
                        continue  # its run ended meanwhile
                with contextlib.suppress(OSError):
                    os.unlink(path)
                if request is not None:
                    try:
                        callback(request)
                    except Exception:  # pragma: no cover - a bug: keep watching the rest
                        _log.exception("cancel request %s could not be handed over", path)


#: The process's one watch.
WATCH = CancelWatch()

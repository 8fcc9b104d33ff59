"""Live events for dashboards: one small datagram per event to whoever watches the state folder.

A dashboard (``flowforge ui``) that watches a state folder binds a Unix datagram socket
at ``<state_dir>/.watchers/<pid>.sock`` and removes the folder when it stops, if no other
dashboard is left in it. A run whose state folder has that folder when it starts attaches
a :class:`LiveListener` (with no folder, nothing is attached, so the engine does not even
build events for it). The listener lists the folder when the run starts and again at
most once a second, checked against a monotonic clock as events pass: with no socket
there, an event costs one clock read and one comparison, no system call, no encoding.

With watchers, each event becomes one compact JSON datagram (workflow, run_id, task,
kind, attempt, index, timestamp and, for failures, the error text) sent without blocking:
a full receive queue drops it (``EAGAIN``), a socket whose server is gone is forgotten
(``ECONNREFUSED``/``ENOENT``). A run never waits for a watcher and never fails because
of one; the dashboard reads the state folder to catch up on what it missed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from ..bus import EventBus
from ..events import (
    Event,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskRetrying,
    TaskSkipped,
    TaskSucceeded,
    TaskWaiting,
    WorkflowFinished,
    WorkflowStarted,
)
from .logging import _snake, error_text

__all__ = ["WATCHERS", "LiveListener", "encode"]

#: The folder, inside a state folder, where watchers bind their sockets.
WATCHERS = ".watchers"
RESCAN_S = 1.0  # how often, at most, the listener looks for new watchers
MAX_TEXT = 4000  # error text is cut here: a datagram stays small

_KINDS: dict[type[Event], str] = {}


def _kind(event: Event) -> str:
    kind = _KINDS.get(type(event))
    if kind is None:
        kind = _KINDS[type(event)] = _snake(type(event).__name__)
    return kind


def encode(event: Event) -> bytes:
    """The datagram for ``event``: compact JSON, the fields a dashboard draws from."""
    out: dict[str, Any] = {
        "workflow": event.workflow, "run_id": event.run_id, "kind": _kind(event),
        "ts": round(event.timestamp, 6),
    }
    if isinstance(event, TaskEvent):
        out["task"] = event.task
        out["attempt"] = event.attempt
        out["index"] = event.index
    if isinstance(event, (TaskSucceeded, TaskFailed)):
        out["duration"] = round(event.duration, 6)
    if isinstance(event, TaskFailed):
        out["error"] = _text(event.error)
        out["will_retry"] = event.will_retry
    elif isinstance(event, TaskRetrying):
        out["delay"] = round(event.delay, 6)
    elif isinstance(event, (TaskWaiting, TaskSkipped, TaskCancelled)):
        out["reason"] = event.reason[:MAX_TEXT]
    elif isinstance(event, WorkflowStarted):
        out["total"] = event.total_tasks
    elif isinstance(event, WorkflowFinished):
        out["status"] = event.status
        out["duration"] = round(event.duration, 6)
        if event.error is not None:
            out["error"] = _text(event.error)
    return json.dumps(out, separators=(",", ":"), default=repr).encode("utf-8", "replace")


def _text(error: BaseException | None) -> str:
    return error_text(error)[:MAX_TEXT]


class LiveListener:
    """Sends each event of a run to the dashboards watching ``state_dir`` (see the module
    docstring). ``clock`` is the monotonic clock that paces the look for watchers."""

    def __init__(
        self, state_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder = os.path.join(os.fspath(state_dir), WATCHERS)
        self._clock = clock
        self._next_scan = 0.0
        self._targets: tuple[str, ...] = ()
        self._sock: socket.socket | None = None

    @property
    def watchers(self) -> tuple[str, ...]:
        """The socket paths events go to now."""
        return self._targets

    def attach(self, bus: EventBus) -> Callable[[], None]:
        """Look for watchers once and start listening on ``bus``; returns the detacher."""
        self._scan(self._clock())
        unsubscribe = bus.subscribe(Event, self.handle)

        def detach() -> None:
            unsubscribe()
            self.close()

        return detach

    def handle(self, event: Event) -> None:
        now = self._clock()
        if now >= self._next_scan:
            self._scan(now)
        if not self._targets:
            return
        try:
            data = encode(event)
        except Exception:
            return  # an event that cannot be described is not worth breaking a run for
        self._send(data)

    def close(self) -> None:
        """Close the sending socket (a later event opens it again if needed)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # -- inside ----------------------------------------------------------------------

    def _scan(self, now: float) -> None:
        self._next_scan = now + RESCAN_S
        try:
            names = os.listdir(self.folder)
        except OSError:
            self._targets = ()
            return
        self._targets = tuple(
            os.path.join(self.folder, n) for n in sorted(names) if n.endswith(".sock")
        )

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError:
                return
            sock.setblocking(False)
            self._sock = sock
        gone: list[str] = []
        for path in self._targets:
            try:
                sock.sendto(data, path)
            except (ConnectionRefusedError, FileNotFoundError):
                gone.append(path)  # its server stopped: forget it until the next look
            except OSError:
                pass  # BlockingIOError (a full queue), a datagram too large: dropped
        if gone:
            self._targets = tuple(p for p in self._targets if p not in gone)

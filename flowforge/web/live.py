"""The server side of the live channel: receive runs' datagrams, fan them out per run.

The dashboard binds ``<state_dir>/.watchers/<pid>.sock`` (folder 0700, socket 0600), the
Unix datagram socket that runs' :class:`~flowforge.listeners.live.LiveListener` send to,
and reads it from the event loop (``add_reader``): no thread, no polling. Each datagram
updates the run's live task states (what a page opened mid-run shows as running), the
metrics, and the queue of every SSE stream watching that run. A stream whose queue is
full is marked ``lagged`` and catches up from the state folder instead, so a slow browser
never slows the server or the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..listeners.live import WATCHERS
from ..persistence import _frames

__all__ = ["LiveHub", "Subscriber", "state_of"]

_log = logging.getLogger("flowforge")

_MAX_PATH = 107  # bytes in a Unix socket path, terminating NUL aside (Linux)
_KEPT_RUNS = 200  # runs whose live task states are remembered
_QUEUE = 1000  # datagrams waiting per SSE stream before it is marked lagged
_PER_WAKEUP = 512  # datagrams read per wake-up, so one busy run cannot starve the loop


def state_of(msg: dict[str, Any]) -> str | None:
    """The task state a datagram means (``waiting``, ``running``, ``retrying``, ...)."""
    kind = msg.get("kind")
    if kind == "task_failed":
        return "retrying" if msg.get("will_retry") else "failed"
    return {
        "task_waiting": "waiting", "task_started": "running", "task_retrying": "retrying",
        "task_succeeded": "succeeded", "task_skipped": "skipped",
        "task_cancelled": "cancelled",
    }.get(str(kind))


class Subscriber:
    """One SSE stream's view of one run: its queue of updates, and whether it lagged."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE)
        self.lagged = False


class LiveHub:
    """Receives datagrams for ``state_dir`` and hands them to subscribers per run;
    ``on_message`` (the metrics) sees every one."""

    def __init__(
        self, state_dir: str, *, on_message: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.folder = os.path.join(os.path.abspath(state_dir), WATCHERS)
        self.path: str | None = None
        self.problem: str | None = None  # why live events are off, when they are
        self.on_message = on_message
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: dict[str, set[Subscriber]] = {}
        self._runs: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()  # live states are read from worker threads

    @property
    def listening(self) -> bool:
        return self._sock is not None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the watcher socket and read it on ``loop``. A failure turns live events
        off (said in ``problem`` and the log); pages then follow runs from the state
        folder alone."""
        try:
            self._bind()
        except OSError as exc:
            self.problem = str(exc)
            _log.warning("flowforge ui: live events are off: %s", exc)
            return
        assert self._sock is not None
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def stop(self) -> None:
        """Stop reading, remove the socket, and the folder if no other watcher is left."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.folder)  # only when empty: other dashboards keep it

    def _bind(self) -> None:
        _frames.make_dirs(self.folder)  # the state folder too, owner-only like a run makes it
        st = os.lstat(self.folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            msg = (f"{self.folder} is not a folder owned by this user; remove it and start "
                   "flowforge ui again")
            raise OSError(msg)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.folder, 0o700)
        self._remove_stale()
        path = os.path.join(self.folder, f"{os.getpid()}.sock")
        n = 1
        while os.path.lexists(path):  # another dashboard in this process
            path = os.path.join(self.folder, f"{os.getpid()}-{n}.sock")
            n += 1
        if len(os.fsencode(path)) > _MAX_PATH:
            msg = (f"the watcher socket path {path} is longer than the {_MAX_PATH} bytes a "
                   "Unix socket path may have; give flowforge ui a shorter --state-dir path")
            raise OSError(msg)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.path = path

    def _remove_stale(self) -> None:
        """Remove the sockets of dashboards that died without cleaning up."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            pid_text = name.removesuffix(".sock").split("-")[0]
            if not name.endswith(".sock") or not pid_text.isdigit():
                continue
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.folder, name))
            except OSError:
                pass  # alive, someone else's

    # -- receiving -------------------------------------------------------------------

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_PER_WAKEUP):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("run_id"), str):
                self.handle(msg)

    def handle(self, msg: dict[str, Any]) -> None:
        """Take one event (a decoded datagram): remember it and fan it out."""
        run_id = msg["run_id"]
        state = state_of(msg)
        if state is not None:
            msg["state"] = state
            if msg.get("index") is None and isinstance(msg.get("task"), str):
                with self._lock:
                    tasks = self._runs.get(run_id)
                    if tasks is None:
                        tasks = self._runs[run_id] = {}
                        while len(self._runs) > _KEPT_RUNS:
                            self._runs.popitem(last=False)
                    tasks[msg["task"]] = msg
        if self.on_message is not None:
            try:
                self.on_message(msg)
            except Exception:
                _log.exception("flowforge ui: metrics failed on a live event")
        for sub in tuple(self._subs.get(run_id, ())):
            try:
                sub.queue.put_nowait(msg)
            except asyncio.QueueFull:
                sub.lagged = True

    # -- for the API -----------------------------------------------------------------

    def tasks(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The latest live event per task of ``run_id`` (empty when none was seen)."""
        with self._lock:
            return dict(self._runs.get(run_id, {}))

    def subscribe(self, run_id: str) -> Subscriber:
        sub = Subscriber(run_id)
        self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]

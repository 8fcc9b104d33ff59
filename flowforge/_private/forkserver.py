"""Process workers forked by the standard library's fork server, started through loky.

A fresh loky worker is a new interpreter that imports loky, cloudpickle and psutil before
it runs anything: 60-70 ms on a 2-core machine, paid by every run. Python's
``forkserver`` start method starts one such interpreter per driver, on first use, that
has made those imports (``PRELOAD``) and then only forks: each worker is a copy of it.
loky takes any multiprocessing context; this is its ``forkserver`` one, with two changes
to what a worker takes from the driver:

* the driver's ``__main__`` is left out of what a worker prepares from, as loky leaves it
  out of its own workers: a script that runs a workflow without an
  ``if __name__ == "__main__":`` guard must not run again in every worker;
* the worker takes the driver's current environment as it starts (``init_worker`` in
  ``remote.py`` gets it): the server's own is the driver's as it was when the server
  started. The working folder and ``sys.path`` come with multiprocessing's preparation
  data.

The server exits when the driver does (however it dies), once its workers let go of the
pipe it watches for that (``release_server``); the workers it forked watch it
(``init_worker``) and exit within half a second of losing it. If the server dies, the
next worker start starts a new one. ``FLOWFORGE_FORK_SERVER=0`` starts every worker as a
fresh interpreter instead (loky's own way).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, spawn, util
from typing import Any

__all__ = ["ENV_SWITCH", "PRELOAD", "fork_server_context", "release_server"]

#: Set to 0 to start every worker as a fresh interpreter (loky's own way).
ENV_SWITCH = "FLOWFORGE_FORK_SERVER"
#: What the server imports once, so that a worker forked from it need not.
PRELOAD = ("loky.process_executor", "cloudpickle", "flowforge._private.remote")

_lock = threading.Lock()
_preloaded = False


def fork_server_context() -> tuple[Any, int | None]:
    """The context a slot's loky pool starts its worker with, and the pid of the server
    that forks it, the server started if need be; ``(None, None)`` where workers start as
    loky starts them (not Linux, or ``FLOWFORGE_FORK_SERVER=0``)."""
    global _preloaded
    if sys.platform != "linux" or os.environ.get(ENV_SWITCH, "1") == "0":
        return None, None
    with _lock:
        if not _preloaded:  # what the user preloads stays, but never their __main__
            server = forkserver._forkserver
            theirs = [m for m in getattr(server, "_preload_modules", []) if m != "__main__"]
            forkserver.set_forkserver_preload([*theirs, *PRELOAD])
            _preloaded = True
        # The server takes this thread's signal mask: one that blocks SIGCHLD (as
        # sigwait users do) would keep it from reaping workers and reporting their exit.
        blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        try:
            forkserver.ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None:
        return None, None
    return _CONTEXT, pid


def release_server() -> None:
    """In a worker the server forked: close the write end of the pipe the server watches
    to see the driver exit. multiprocessing hands it to every process the server forks,
    so the server outlives the driver while they live; and they wait for the server to
    go: both would stay. (A task that starts its own forkserver workers gets a new
    server.)"""
    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        server._forkserver_alive_fd = None  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            os.close(fd)


class _Popen(popen_forkserver.Popen):
    """multiprocessing's ``forkserver`` Popen, without the driver's ``__main__`` in the
    preparation data (the rest as in CPython 3.11-3.13)."""

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            mp_context.reduction.dump(prep_data, buf)  # type: ignore[attr-defined]
            mp_context.reduction.dump(process_obj, buf)  # type: ignore[attr-defined]
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        parent_w = os.dup(w)  # the child's sentinel of this process, as the stdlib keeps
        self.finalizer = util.Finalize(
            self, util.close_fds, (parent_w, self.sentinel)  # type: ignore[attr-defined]
        )
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:  # noqa: N802 (multiprocessing's name)
        return _Popen(process_obj)


class _Context(mp_context.ForkServerContext):
    Process = _Process


_CONTEXT = _Context()

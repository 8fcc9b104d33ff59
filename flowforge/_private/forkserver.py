"""A fork server for process workers, so that a run's workers start in milliseconds.

A loky worker is a fresh interpreter that imports loky, cloudpickle and psutil before it
can run anything: 60-70 ms on a 2-core machine, paid again by every run. The fork server
is one such interpreter, started once per driver process on first use, that has made
those imports and then only forks: each new worker is a copy of it, ready in a few
milliseconds. This is what Python's ``forkserver`` start method does (the default on
Linux from 3.14), done for loky's workers and without running the driver's
``__main__``: the server imports nothing of the user's. Every worker still gets the
driver's *current* environment, working folder, ``sys.path``, stdin/stdout/stderr and
loky's pipes, as a freshly started one would.

Protocol (a ``SOCK_SEQPACKET`` socket pair, one message per request)::

    driver -> server   pickle((which of fds 0-2 follow, the fd numbers the worker must
                       find its files at, its call pipe's number, its environment))
                       + the files themselves (SCM_RIGHTS): a status pipe, stdio, loky's
    server -> driver   the new worker's pid (8 bytes)
    server -> status   the worker's exit code (4 bytes, ``-N`` for signal N) once it is
                       reaped; the driver's ``poll()`` reads it, as ``waitpid`` would

Lifetime: the server exits when the driver's end of the socket closes (the driver
exited, however it died). Workers watch their parent (see ``init_worker``): a worker
whose server is gone exits within half a second. Where the server cannot be had (not
Linux, ``FLOWFORGE_FORK_SERVER=0``, or it failed to start), workers start as loky
starts them.

Forking is safe here because the server is single-threaded and has loaded no native
library that starts threads (no OpenMP, no BLAS): the reason loky does not fork the
driver itself.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from io import BytesIO
from multiprocessing import process as mp_process
from multiprocessing import util as mp_util
from multiprocessing.context import set_spawning_popen
from typing import Any

from loky.backend import popen_loky_posix, reduction, resource_tracker, spawn
from loky.backend.context import LokyContext
from loky.backend.process import LokyProcess

__all__ = ["ForkServerContext", "fork_server_context", "serve"]

#: Set to 0 to start every worker as a fresh interpreter (loky's own way).
ENV_SWITCH = "FLOWFORGE_FORK_SERVER"
_READY = b"ready"
_START_TIMEOUT_S = 60.0
_PID = struct.Struct("q")
_CODE = struct.Struct("i")

_server: _Server | None = None
_server_lock = threading.Lock()
_exit_hook: list[bool] = []


def fork_server_context() -> ForkServerContext | None:
    """A loky context whose workers the fork server forks, starting the server if need
    be; None where there is none to be had (then use loky's default)."""
    global _server
    if sys.platform != "linux" or os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    with _server_lock:
        server = _server
        if server is None or not server.usable():
            if server is not None:
                server.close()
            try:
                server = _server = _Server()
            except OSError:
                _server = None
                return None
            if not _exit_hook:
                atexit.register(_close_at_exit)
                _exit_hook.append(True)
    return ForkServerContext(server)


def _close_at_exit() -> None:
    """Stop the server with the interpreter (it would stop by itself a moment later)."""
    if _server is not None:
        _server.close()


class ForkServerContext(LokyContext):
    """loky's context, with workers forked by ``server`` (see the module docstring)."""

    def __init__(self, server: _Server) -> None:
        super().__init__()
        self.server_pid = server.pid
        self._server = server

    def Process(self, *args: Any, **kwargs: Any) -> LokyProcess:  # noqa: N802 (loky's name)
        process = _ForkedProcess(*args, **kwargs)
        process.fork_server = self._server  # this one: its workers expect it as parent
        return process


class _ForkedProcess(LokyProcess):
    fork_server: _Server | None = None

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 (multiprocessing's name)
        return _ForkedPopen(process_obj)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # as pickled for the worker: without the server
        state.pop("fork_server", None)
        return state


class _ForkedPopen(popen_loky_posix.Popen):
    """loky's POSIX ``Popen``, with the ``fork_exec`` of a fresh interpreter replaced by
    a request to the fork server. Falls back to loky's way if the server is gone."""

    _fds: list[int]
    _status: list[int | None]
    returncode: int | None

    def _launch(self, process_obj: Any) -> None:
        server = process_obj.fork_server
        if server is None or not server.usable():
            self._launch_fresh(process_obj)
            return
        tracker_fd = resource_tracker._resource_tracker.getfd()
        data = BytesIO()
        set_spawning_popen(self)
        try:  # what the worker reads first from its call pipe: as loky sends it
            prep = spawn.get_preparation_data(
                process_obj._name, getattr(process_obj, "init_main_module", True)
            )
            reduction.dump(prep, data)
            reduction.dump(process_obj, data)
        finally:
            set_spawning_popen(None)
        parent_r, child_w = os.pipe()  # the sentinel: readable once the worker is gone
        child_r, parent_w = os.pipe()  # the call pipe
        try:
            self._fds += [child_r, child_w, tracker_fd]
            self.duplicate_for_child(prep["mp_tracker_fd"])
            env = {**os.environ, **process_obj.env}
            try:
                self.pid, status = server.fork(self._fds, child_r, env)
            except OSError:  # the server died: start this one as loky does
                os.close(parent_r)
                os.close(parent_w)
                self._fds = []
                self._launch_fresh(process_obj)
                return
            self._status = [status]
            mp_util.Finalize(self, _close_status, (self._status,))
            self.sentinel = parent_r
            mp_util.Finalize(self, os.close, (parent_r,))
            with os.fdopen(parent_w, "wb") as pipe:
                pipe.write(data.getbuffer())
        finally:
            os.close(child_r)
            os.close(child_w)

    def _launch_fresh(self, process_obj: Any) -> None:
        """loky's own way: a fresh interpreter that runs ``python -m <this module's
        name>``, which must stay loky's start-up script."""
        self.__module__ = popen_loky_posix.__name__
        super()._launch(process_obj)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        status = getattr(self, "_status", None)
        if status is None:  # started by loky's fallback: a child of ours
            return super().poll(flag)
        fd = status[0]
        if self.returncode is None and fd is not None:
            if flag & os.WNOHANG and not select.select([fd], [], [], 0)[0]:
                return None
            data = os.read(fd, _CODE.size)  # the server writes it once it has reaped it
            # Nothing: the server died before it could tell; the worker is gone too.
            self.returncode = _CODE.unpack(data)[0] if len(data) == _CODE.size else 255
            _close_status(status)
        return self.returncode


def _close_status(status: list[int | None]) -> None:
    fd, status[0] = status[0], None
    if fd is not None:
        os.close(fd)


class _Server:
    """The driver's handle on its fork server process."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        path = [p or os.getcwd() for p in sys.path]
        code = (
            f"import sys; sys.path[:0] = {path!r}; "
            f"from flowforge._private.forkserver import serve; serve({theirs.fileno()})"
        )
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._sock = ours
        self._owner = os.getpid()
        self._lock = threading.Lock()
        ours.settimeout(_START_TIMEOUT_S)
        try:
            ready = ours.recv(len(_READY))
        except OSError:
            ready = b""
        if ready != _READY:
            self.close()
            msg = "the fork server did not start"
            raise OSError(msg)
        ours.settimeout(None)

    def usable(self) -> bool:
        """Whether this process may use it: it is ours (not inherited by a forked
        driver) and still runs."""
        return self._owner == os.getpid() and self._proc.poll() is None

    def fork(self, fds: list[int], pipe: int, env: dict[str, str]) -> tuple[int, int]:
        """Have the server fork a worker that finds each of ``fds`` at the same number,
        reads its call pipe at ``pipe`` and has ``env``: its pid and the pipe its exit
        code will come through."""
        fds = list(dict.fromkeys(fds))
        stdio = [fd for fd in (0, 1, 2) if _is_open(fd)]
        request = pickle.dumps(([fd in stdio for fd in (0, 1, 2)], fds, pipe, env))
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._sock, [request], [status_w, *stdio, *fds])
                reply = self._sock.recv(_PID.size)
        except OSError:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        if len(reply) != _PID.size:
            os.close(status_r)
            msg = "the fork server is gone"
            raise OSError(msg)
        return _PID.unpack(reply)[0], status_r

    def close(self) -> None:
        self._sock.close()  # the server exits when it sees this end close
        if self._owner == os.getpid():
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# -- the server ------------------------------------------------------------------------


def serve(fd: int) -> None:
    """The fork server's main loop (run as ``python -c``): fork a worker per request,
    report each one's exit code, and exit once the driver's end of ``fd`` closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    import cloudpickle  # noqa: F401  what a worker needs, imported once, here
    import loky.process_executor  # noqa: F401

    from . import remote  # noqa: F401

    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd fires
    status: dict[int, int] = {}  # worker pid -> where its exit code goes
    sock.sendall(_READY)
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            _reap(status)
        if sock.fileno() not in ready:
            continue
        try:
            request, fds, _, _ = socket.recv_fds(sock, 1 << 20, 256)
        except OSError:
            request, fds = b"", []
        if not request or not fds:  # the driver is gone
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            try:
                _become_worker(request, fds)
            finally:
                os._exit(1)
        status[pid] = fds[0]
        for f in fds[1:]:
            os.close(f)
        sock.sendall(_PID.pack(pid))


def _reap(status: dict[int, int]) -> None:
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, _CODE.pack(os.waitstatus_to_exitcode(wait_status)))
            except OSError:  # the driver no longer asks
                pass
            os.close(fd)


def _become_worker(request: bytes, fds: list[int]) -> None:
    """In the forked child: take the driver's files, environment and call pipe, then run
    as loky's worker start-up script runs. Never returns."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    has_stdio, wanted, pipe, env = pickle.loads(request)
    stdio = [fd for fd, has in zip((0, 1, 2), has_stdio, strict=True) if has]
    received = fds[1:]  # fds[0]: the status pipe, the server's to write
    _place(list(zip(received, [*stdio, *wanted], strict=True)))
    os.environ.clear()
    os.environ.update(env)
    code = 1
    try:
        with os.fdopen(pipe, "rb") as from_parent:
            mp_process.current_process()._inheriting = True  # type: ignore[attr-defined]
            try:
                spawn.prepare(pickle.load(from_parent))
                process_obj = pickle.load(from_parent)
            finally:
                del mp_process.current_process()._inheriting  # type: ignore[attr-defined]
        code = process_obj._bootstrap()
        atexit._run_exitfuncs()  # as the interpreter would at exit (resource teardowns)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _place(moves: list[tuple[int, int]]) -> None:
    """Make each ``(have, want)`` file available at number ``want`` and close every
    other file of this process but 0-2 (the server's socket and pipes among them)."""
    top = max([2, *(h for h, _ in moves), *(w for _, w in moves)]) + 1
    high = [(_dup_above(h, top), w) for h, w in moves]
    keep = {h for h, _ in high}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:  # the listing's own descriptor, closed already
                pass
    for h, w in high:
        os.dup2(h, w, inheritable=w <= 2)
        os.close(h)


def _dup_above(fd: int, floor: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)

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
                       find its files at, its call pipe's number))
                       + the files themselves (SCM_RIGHTS): a status pipe, stdio, loky's
    server -> driver   the new worker's pid (8 bytes; -1: it could not fork)
    driver -> call     a length-prefixed pickle of the driver's state (environment,
                       umask, resource limits, CPU affinity, niceness), then what loky
                       sends a worker it started (preparation data, process object)
    server -> status   the worker's exit code (4 bytes, ``-N`` for signal N) once it is
                       reaped; the driver's ``poll()`` reads it, as ``waitpid`` would

Lifetime: the server exits when the driver's end of the socket closes (the driver
exited, however it died). Workers watch the parent that started them (see
``init_worker``): a worker whose server is gone exits within half a second. Settings an
interpreter reads only as it starts (``PYTHON*`` variables) are the server's: when they
change, the next worker comes from a new server, and the old one stays for the workers
it forked. Where no server can be had (not Linux, ``FLOWFORGE_FORK_SERVER=0``, it failed
to start or died), workers start as loky starts them.

Forking is safe here because the server is single-threaded and has loaded no native
library that starts threads (no OpenMP, no BLAS): the reason loky does not fork the
driver itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
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
_FRAME = struct.Struct("I")

_server: _Server | None = None  # the one the last context was made for
_servers: dict[tuple[tuple[str, str], ...], _Server] = {}  # by their start-up settings
_server_lock = threading.Lock()


def fork_server_context() -> ForkServerContext | None:
    """A loky context whose workers the fork server forks, starting the server if need
    be; None where there is none to be had (then use loky's default)."""
    global _server
    if sys.platform != "linux" or os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    with _server_lock:
        # A server started under other interpreter settings stays, for the workers it
        # forked (stopping it would stop them); it serves again if they come back.
        key = tuple(sorted(_startup_settings().items()))
        server = _servers.pop(key, None)
        if server is not None and not server.usable():
            server.close()  # it died: reap it
            server = None
        if server is None:
            try:
                server = _Server()
            except OSError:
                return None
        _servers[key] = _server = server
    return ForkServerContext(server)


def _close_at_exit() -> None:
    """Stop the servers with the interpreter (they would stop by themselves a moment
    later)."""
    for server in list(_servers.values()):
        server.close()


atexit.register(_close_at_exit)


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
        try:  # what the worker reads from its call pipe after its state: as loky sends it
            prep = spawn.get_preparation_data(
                process_obj._name, getattr(process_obj, "init_main_module", True)
            )
            reduction.dump(prep, data)
            reduction.dump(process_obj, data)
        finally:
            set_spawning_popen(None)
        state = pickle.dumps(_driver_state({**os.environ, **process_obj.env}))
        parent_r, child_w = os.pipe()  # the sentinel: readable once the worker is gone
        child_r, parent_w = os.pipe()  # the call pipe
        try:
            self._fds += [child_r, child_w, tracker_fd]
            self.duplicate_for_child(prep["mp_tracker_fd"])
            try:
                self.pid, status = server.fork(self._fds, child_r)
            except OSError:  # the server died, or could not fork: start it as loky does
                os.close(parent_r)
                os.close(parent_w)
                self._fds = []
                self._launch_fresh(process_obj)
                return
            self._status = [status]
            self._status_lock = threading.Lock()
            mp_util.Finalize(self, _close_status, (self._status,))
            self.sentinel = parent_r
            mp_util.Finalize(self, os.close, (parent_r,))
            with os.fdopen(parent_w, "wb") as pipe:
                pipe.write(_FRAME.pack(len(state)) + state)
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
        if status is None or getattr(self, "_orphan", False):
            return super().poll(flag)  # a child of ours: started by loky, or adopted
        # Polled from several threads (loky's, and every Process.start() of this process
        # polls all children): one reads and closes the status pipe, under the lock,
        # which is never held while waiting.
        while True:
            with self._status_lock:
                fd = status[0]
                if self.returncode is not None or fd is None:
                    return self.returncode
                if _ready(fd, 0):
                    data = os.read(fd, _CODE.size)  # written once the server reaped it
                    _close_status(status)
                    if len(data) == _CODE.size:
                        self.returncode = _CODE.unpack(data)[0]
                        return self.returncode
                    self.returncode = self._server_died()  # before it could tell
                    if self.returncode is not None:
                        return self.returncode
                    break  # adopted by this process: wait for it as for any child
                if flag & os.WNOHANG:
                    return None
            _ready(fd, 100)  # then look again: another thread may have read it
        return super().poll(flag)

    def _server_died(self) -> int | None:
        """The exit code of a worker whose server died first. If this process adopted
        it (a subreaper, or PID 1 in a container) it is ours to wait for from now on:
        None while it runs. Else it cannot be known: 255 (the worker exits within half a
        second of losing its parent)."""
        try:
            pid, wait_status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 255
        if pid == 0:
            self._orphan = True
            return None
        return os.waitstatus_to_exitcode(wait_status)


def _close_status(status: list[int | None]) -> None:
    fd, status[0] = status[0], None
    if fd is not None:
        os.close(fd)


def _ready(fd: int, timeout_ms: int | None) -> bool:
    """Whether ``fd`` can be read without blocking (``poll``: any fd number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


#: Resource limits a worker takes over from the driver, as a fresh process would.
_LIMITS = tuple(
    getattr(resource, name) for name in (
        "RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
        "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_MEMLOCK",
    ) if hasattr(resource, name)
)


def _driver_state(env: dict[str, str]) -> tuple[Any, ...]:
    """What a freshly started worker would take from the driver now and a forked one
    must be given: environment, umask, resource limits, CPU affinity and niceness."""
    umask = 0o022
    with open("/proc/self/status") as status:  # os.umask() can only be read by setting it
        for line in status:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
                break
    limits = [(which, resource.getrlimit(which)) for which in _LIMITS]
    return (env, umask, limits, os.sched_getaffinity(0),
            os.getpriority(os.PRIO_PROCESS, 0))


def _startup_settings() -> dict[str, str]:
    """Environment variables read only as an interpreter or loky starts: a server
    started under other values must not fork workers for this driver."""
    return {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "LOKY_PICKLER"))}


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
        # loky starts its resource trackers (fresh interpreters too) at the first
        # worker start: start them now, to boot on the other cores while the server does
        with contextlib.suppress(Exception):
            from multiprocessing import resource_tracker as mp_tracker

            resource_tracker.ensure_running()
            mp_tracker.ensure_running()
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

    def fork(self, fds: list[int], pipe: int) -> tuple[int, int]:
        """Have the server fork a worker that finds each of ``fds`` at the same number
        and reads its state and call from ``pipe``: its pid, and the pipe its exit code
        will come through."""
        fds = list(dict.fromkeys(fds))
        # The driver's stdio as a fresh worker would get it: only files a child inherits.
        stdio = [fd for fd in (0, 1, 2) if _inherited(fd)]
        request = pickle.dumps(([fd in stdio for fd in (0, 1, 2)], fds, pipe))
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._sock, [request], [status_w, *stdio, *fds])
                while not _ready(self._sock.fileno(), 1000):
                    if self._proc.poll() is not None:
                        msg = "the fork server died"
                        raise OSError(msg)
                reply = self._sock.recv(_PID.size)
        except OSError:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        pid = _PID.unpack(reply)[0] if len(reply) == _PID.size else -1
        if pid <= 0:
            os.close(status_r)
            msg = "the fork server is gone" if not reply else "the fork server could not fork"
            raise OSError(msg)
        return pid, status_r

    def close(self) -> None:
        if self._owner == os.getpid():
            with contextlib.suppress(OSError):  # EOF for the server even if a forked
                self._sock.shutdown(socket.SHUT_RDWR)  # child of ours holds a copy
        self._sock.close()
        if self._owner == os.getpid():
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def forget(self) -> None:
        """In a child forked from the driver: drop this copy of the socket, so that the
        server still sees the driver's end close when the driver exits."""
        self._sock.close()


def _inherited(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:  # not open
        return False


def _after_fork_in_child() -> None:
    global _server, _server_lock
    _server_lock = threading.Lock()  # a thread of the parent may have held it
    for server in _servers.values():
        server.forget()
    _servers.clear()
    _server = None


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the server ------------------------------------------------------------------------


def serve(fd: int) -> None:
    """The fork server's main loop (run as ``python -c``): fork a worker per request,
    report each one's exit code, and exit once the driver's end of ``fd`` closes."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the driver's thread may block some
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
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    sock.sendall(_READY)
    while True:
        ready = {fd for fd, _ in poller.poll()}
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
            request, fds, _, _ = socket.recv_fds(sock, 1 << 16, 256)
        except OSError:
            request, fds = b"", []
        if not request or not fds:  # the driver is gone
            os._exit(0)
        try:
            pid = os.fork()
        except OSError:  # out of processes or memory: the driver starts it another way
            pid = -1
        if pid == 0:
            try:
                # The server's files first: a child still holding the socket or another
                # worker's status pipe would keep the driver from seeing the server die.
                signal.set_wakeup_fd(-1)
                for f in (sock.fileno(), wake_r, wake_w, *status.values()):
                    os.close(f)
                _become_worker(request, fds)
            finally:
                os._exit(1)
        if pid > 0:
            status[pid] = fds[0]
        else:
            os.close(fds[0])
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
    """In the forked child: take the driver's state, files and call pipe, then run as
    loky's worker start-up script runs. Never returns."""
    code = 1
    received = fds[1:]  # fds[0]: the status pipe, the server's to write
    stderr = None
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter
        has_stdio, wanted, pipe = pickle.loads(request)
        stdio = [fd for fd, has in zip((0, 1, 2), has_stdio, strict=True) if has]
        targets = [*stdio, *wanted]
        stderr = received[targets.index(2)] if 2 in stdio else None
        try:
            frame = _read_frame(received[targets.index(pipe)])
        except EOFError:  # the driver gave up on this start (its server died meanwhile)
            stderr = None
            raise
        _take_state(pickle.loads(frame))
        _place(list(zip(received, targets, strict=True)))
        stderr = 2
        _fresh_stdio()
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

        if stderr is not None:  # the driver's stderr: the server's own goes nowhere
            with contextlib.suppress(OSError):
                os.write(stderr, traceback.format_exc().encode(errors="replace"))
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _read_frame(fd: int) -> bytes:
    """One length-prefixed record from ``fd``, read whole."""
    head = _read_exactly(fd, _FRAME.size)
    return _read_exactly(fd, _FRAME.unpack(head)[0])


def _read_exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = os.read(fd, left)
        if not part:
            msg = "the driver closed the call pipe early"
            raise EOFError(msg)
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _take_state(state: tuple[Any, ...]) -> None:
    """Become what the driver is now (see ``_driver_state``); limits and priorities that
    an unprivileged process may not take stay as they are."""
    env, umask, limits, affinity, nice = state
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    os.umask(umask)
    for which, limit in limits:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, limit)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, affinity)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    # loky reads these from the environment when it is imported, here in the server
    import loky.process_executor as loky_executor

    loky_executor.MAX_DEPTH = int(os.environ.get("LOKY_MAX_DEPTH", 10))
    loky_executor._MAX_MEMORY_LEAK_SIZE = int(
        float(os.environ.get("LOKY_MAX_MEMORY_LEAK_SIZE", 3e8))
    )


def _fresh_stdio() -> None:
    """Buffer stdout and stderr as a fresh interpreter would for the driver's files
    (the server's were /dev/null): line by line on a terminal, not at all with
    ``PYTHONUNBUFFERED``."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.reconfigure(  # type: ignore[union-attr]
                    line_buffering=unbuffered or fd == 2 or os.isatty(fd),
                    write_through=unbuffered,
                )


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

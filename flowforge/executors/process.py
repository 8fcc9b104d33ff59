"""The process executor: loky workers, one per slot, with cloudpickle.

Each of the ``max_workers`` slots is a one-worker ``loky.ProcessPoolExecutor`` that runs
one attempt at a time. Why not one pool of N workers? When a loky worker dies (a
segfault, ``os._exit``, the OOM killer, or FlowForge killing it for a timeout), loky fails
*every* in-flight and queued future of that pool, and the driver can no longer tell the
attempt that crashed from its bystanders. With one worker per slot the future that fails
is the attempt that crashed: nothing else is charged, and only that slot is restarted.

Workers ignore SIGINT (the driver decides what Ctrl-C stops) and exit within about half a
second when the driver process dies, even in the middle of a task.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import WorkerCrashedError
from .base import Executor, default_workers

__all__ = ["ProcessExecutor"]


class ProcessExecutor(Executor):
    """Runs work in up to ``max_workers`` loky worker processes (default: CPU count).

    A result whose buffers (NumPy arrays and the like, pickle protocol 5) add up to
    ``share_threshold`` bytes or more is not sent back through the pipe: the worker writes
    it once to a file (the state folder with autosave, else ``/dev/shm``) and the tasks
    that need it map that file. ``None`` turns this off."""

    name = "process"
    isolated = True

    def __init__(
        self, max_workers: int | None = None, *, share_threshold: int | None = 1 << 20
    ) -> None:
        if max_workers is None:
            max_workers = default_workers()
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            msg = (
                "ProcessExecutor(max_workers=...) must be a positive integer, "
                f"got {max_workers!r}"
            )
            raise ValueError(msg)
        if share_threshold is not None and (
            not isinstance(share_threshold, int) or isinstance(share_threshold, bool)
            or share_threshold < 0
        ):
            msg = (
                "ProcessExecutor(share_threshold=...) must be a byte count >= 0, or None to "
                f"send every result through the pipe, got {share_threshold!r}"
            )
            raise ValueError(msg)
        self.max_workers = max_workers
        self.share_threshold = share_threshold
        self._lock = threading.Lock()
        self._slots = [_Slot(i) for i in range(max_workers)]
        self._queued: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]]
        self._queued = deque()

    def start(self) -> None:
        """Start every worker now rather than at first use (they start in parallel)."""
        for slot in self._slots:
            slot.ensure_started().submit(os.getpid)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        outer: Future[Any] = Future()
        with self._lock:
            slot = next((s for s in self._slots if s.outer is None), None)
            if slot is None:
                self._queued.append((outer, fn, args, kwargs))
                return outer
            slot.outer = outer
        self._launch(slot, outer, fn, args, kwargs)
        return outer

    def cancel_running(self, future: Future[Any]) -> bool:
        """Kill the worker running ``future`` (SIGKILL); its slot restarts on next use."""
        with self._lock:
            for i, item in enumerate(self._queued):
                if item[0] is future:
                    del self._queued[i]
                    future.cancel()
                    return True
            slot = next((s for s in self._slots if s.outer is future), None)
        if slot is None:
            return future.cancel()
        future.cancel()  # never marked running, so this sticks; _launch then skips it
        slot.kill()
        return True

    def worker_pid(self, future: Future[Any]) -> int | None:
        """The pid of the worker process running ``future``, if it runs now."""
        with self._lock:
            slot = next((s for s in self._slots if s.outer is future), None)
        proc = None if slot is None else slot._process
        return None if proc is None else proc.pid

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            queued, self._queued = list(self._queued), deque()
        for outer, *_ in queued:
            outer.cancel()
        for slot in self._slots:
            slot.stop(wait=wait)

    def _launch(
        self,
        slot: _Slot,
        outer: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        if outer.cancelled():  # cancelled between leaving the queue and reaching here
            self._finish(slot, outer, None, None)
            return
        try:
            inner = slot.submit(fn, args, kwargs)
        except BaseException as exc:
            self._finish(slot, outer, None, exc)
            return
        inner.add_done_callback(lambda f: self._finish(slot, outer, f, None))

    def _finish(
        self,
        slot: _Slot,
        outer: Future[Any],
        inner: Future[Any] | None,
        error: BaseException | None,
    ) -> None:
        if inner is not None:
            if inner.cancelled():
                error = WorkerCrashedError("the worker was stopped", exitcode=None, signal=None)
            else:
                error = inner.exception()
                if error is not None and _is_broken_pool(error):
                    error = slot.crash_error()
        with self._lock:
            slot.outer = None
            nxt = self._queued.popleft() if self._queued else None
            if nxt is not None:
                slot.outer = nxt[0]
        if not outer.done():
            if error is not None:
                outer.set_exception(error)
            else:
                assert inner is not None
                outer.set_result(inner.result())
        if nxt is not None:
            self._launch(slot, *nxt)


class _Slot:
    """One loky pool of one worker, restarted after its worker dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.outer: Future[Any] | None = None
        self._pool: Any = None
        self._process: Any = None
        self._killed = False

    def ensure_started(self) -> Any:
        if self._pool is None:
            import loky

            from .._private.remote import init_worker

            self._pool = loky.ProcessPoolExecutor(
                max_workers=1, initializer=init_worker, initargs=(os.getpid(),)
            )
            self._killed = False
        return self._pool

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pool = self.ensure_started()
        inner = pool.submit(fn, *args, **kwargs)
        self._process = next(iter(pool._processes.values()), None)
        return inner

    def kill(self) -> None:
        """SIGKILL the worker; the broken pool is dropped so the next use starts a new one."""
        proc, pool = self._process, self._pool
        self._killed = True
        if proc is not None and proc.pid is not None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pool is not None:
            self._pool = None
            pool.shutdown(wait=False, kill_workers=True)

    def crash_error(self) -> WorkerCrashedError:
        """Describe how the worker died, and drop the broken pool."""
        proc, pool = self._process, self._pool
        self._pool = None
        if pool is not None:
            pool.shutdown(wait=False, kill_workers=True)
        code = None
        if proc is not None:
            proc.join(timeout=2)
            code = proc.exitcode
        if code is not None and code < 0:
            try:
                signame: str | None = signal.Signals(-code).name
            except ValueError:
                signame = None
            how = f"was killed by signal {signame or -code}"
            if signame == "SIGKILL" and not self._killed:
                how += " (the out-of-memory killer sends this too)"
        else:
            signame = None
            how = f"exited with code {code}" if code is not None else "died"
        return WorkerCrashedError(
            f"its worker process (pid {getattr(proc, 'pid', '?')}) {how}",
            exitcode=code,
            signal=signame,
        )

    def stop(self, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, kill_workers=not wait)


def _is_broken_pool(error: BaseException) -> bool:
    from concurrent.futures.process import BrokenProcessPool

    return isinstance(error, BrokenProcessPool)

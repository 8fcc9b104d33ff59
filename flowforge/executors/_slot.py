"""A worker slot of the process executor: one loky pool of one worker, restarted after
its worker dies, so that a crash is charged to the one attempt it ran (see the state
diagram in :mod:`flowforge.executors.process`)."""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import WorkerCrashedError

__all__ = ["Slot", "is_broken_pool", "is_shutdown"]


class Slot:
    """One loky pool of one worker, restarted after its worker dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.jobs: list[Any] | None = None  # what it runs now (None: free)
        self.sent: list[Any] | None = None  # ``jobs`` once they are in the worker's pipe
        self._pool: Any = None
        self._process: Any = None
        self._killed = False

    @property
    def started(self) -> bool:
        return self._pool is not None

    def swap(self, old: list[Any], new: Any) -> Any:
        """Replace the jobs list ``old`` (``jobs``) with ``new`` (None: drop it)."""
        if old is self.jobs:
            self.jobs = new
            if new is None:
                self.sent = None
        return new

    def runs(self, future: Future[Any]) -> bool:
        jobs = self.jobs
        return jobs is not None and any(j.future is future for j in jobs)

    @property
    def killed_on_purpose(self) -> bool:
        return self._killed

    def ensure_started(self) -> Any:
        if self._pool is None:
            import loky

            from .._private.remote import init_worker

            if sys.platform == "linux":  # POSIX-only code
                from .._private.forkserver import fork_server_context

            # loky swaps a worker whose memory grew by 300 MB for a new one between
            # calls: the slot would then name (and kill) a pid that is gone. A run's
            # workers live for that run; memory limits are the engine's (Resources).
            env = {"LOKY_MAX_MEMORY_LEAK_SIZE": str(10**18)}
            context, server = (
                fork_server_context() if sys.platform == "linux" else (None, None)
            )
            # A forked worker has the server's environment: it takes the driver's own.
            driver_env = None if context is None else {**os.environ, **env}
            self._pool = loky.ProcessPoolExecutor(
                max_workers=1, initializer=init_worker,
                initargs=(os.getpid(), server, driver_env), context=context,
                env=env if context is None else None,
            )
            self._killed = False
        return self._pool

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Send a call to this slot's worker, starting one if it has none."""
        proc = self._process
        if self._pool is not None and proc is not None and _has_died(proc):
            # It died while idle (the OOM killer, a kill -9): nothing of ours ran there.
            dead, self._pool = self._pool, None
            dead.shutdown(wait=False, kill_workers=True)
        pool = self.ensure_started()
        inner = pool.submit(fn, *args, **kwargs)
        self._process = next(iter(pool._processes.values()), None)
        return inner

    def drop(self) -> Any:
        """Forget the pool without signalling its worker (it may be gone and its pid
        reused); the caller shuts the returned pool down."""
        pool, self._pool = self._pool, None
        return pool

    def kill(self) -> Any:
        """SIGKILL the worker and drop its pool, so the next use starts a new one; the
        caller shuts the returned pool down (outside its lock: that runs callbacks)."""
        proc, pool = self._process, self._pool
        self._killed = True
        if pool is not None and proc is not None and proc.pid is not None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._pool = None
        return pool

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


def _has_died(proc: Any) -> bool:
    """Whether a worker process has ended (its sentinel is readable; works whoever
    reaped it). One ``poll`` call: this runs before every send."""
    poller = select.poll()
    try:
        poller.register(proc.sentinel, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # its sentinel is closed: it is gone
        return True


def is_shutdown(error: BaseException) -> bool:
    from loky.process_executor import ShutdownExecutorError

    return isinstance(error, ShutdownExecutorError)


def is_broken_pool(error: BaseException) -> bool:
    from concurrent.futures.process import BrokenProcessPool

    return isinstance(error, BrokenProcessPool)

"""A worker slot of the process executor: one loky pool of one worker, restarted after
its worker dies, so that a crash is charged to the one attempt it ran (see the state
diagram in :mod:`flowforge.executors.process`), and the work (:class:`Job`) a slot
holds."""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import WorkerCrashedError
from ._deathwatch import DeathWatch, end_group

__all__ = ["Claims", "Job", "Slot", "is_broken_pool", "is_shutdown"]


class Job:
    """One piece of work in the queue: a plain call, or one task attempt (``call``)."""

    __slots__ = ("future", "fn", "args", "kwargs", "call", "name", "solo", "ahead")

    def __init__(
        self, future: Future[Any], fn: Callable[..., Any] | None, args: tuple[Any, ...],
        kwargs: dict[str, Any], call: tuple[Any, ...] | None = None, name: str = "",
        solo: bool = False, ahead: bool = False,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.call = call  # (task, kwargs, env, policy): packed with others into one batch
        self.name = name
        self.solo = solo  # never batched: it has a timeout, or its batch's worker died
        self.ahead = ahead and not solo  # may wait in a busy worker's pipe


class Slot:
    """One loky pool of one worker, restarted after its worker dies."""

    def __init__(self, index: int, watch: DeathWatch | None = None) -> None:
        self.index = index
        self._watch = watch  # ends a worker's process group when the worker dies
        self.jobs: list[Job] | None = None  # what it runs now (None: free)
        self.sent: list[Job] | None = None  # ``jobs`` once they are in the worker's pipe
        self.ahead: list[Job] | None = None  # to wait behind ``jobs`` in the pipe
        self.sent_ahead: list[Job] | None = None  # ``ahead`` once it is in the pipe
        self.claim: str | None = None  # the file its worker deletes to start ``sent_ahead``
        self.since = 0.0  # when the worker started ``jobs`` (time.monotonic, roughly)
        self._pool: Any = None
        self._process: Any = None
        self._killed = False

    @property
    def started(self) -> bool:
        return self._pool is not None

    def takes_ahead(self) -> bool:
        """Whether jobs may be sent now to wait behind what this worker runs: it runs
        attempts that may have others wait behind them (never a timed one, which can be
        killed alone), already sent, and nothing waits yet."""
        jobs = self.jobs
        return (
            jobs is not None and self.ahead is None and self.sent is jobs
            and self._pool is not None and all(j.ahead for j in jobs)
        )

    def swap(self, old: list[Job], new: Any) -> Any:
        """Replace the jobs list ``old`` (``jobs`` or ``ahead``) with ``new`` (None:
        drop it)."""
        if old is self.jobs:
            self.jobs = new
            if new is None:
                self.sent = None
        elif old is self.ahead:
            self.ahead = new
            if new is None:
                self.sent_ahead = None
                self.drop_claim()
        return new

    def pop_sent_ahead(self) -> list[Job]:
        """What waits behind ``jobs`` in the worker's pipe, which dies with that worker
        (now cleared); not yet sent, it stays: it runs next, on a new worker."""
        if self.ahead is None or self.sent_ahead is not self.ahead:
            return []
        waiting, self.ahead, self.sent_ahead = self.ahead, None, None
        self.drop_claim()
        return waiting

    def drop_claim(self) -> bool:
        """Delete the claim of what was sent ahead, so its worker never starts it: True
        if it had not started it yet (the claim was still there)."""
        claim, self.claim = self.claim, None
        if claim is None:
            return False
        try:
            os.unlink(claim)
        except OSError:  # its worker took it: it has started
            return False
        return True

    def holds(self, future: Future[Any]) -> bool:
        return any(
            jobs is not None and any(j.future is future for j in jobs)
            for jobs in (self.jobs, self.ahead)
        )

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
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        *, start: bool = True,
    ) -> Any:
        """Send a call to this slot's worker, starting one if it has none;
        ``start=False``: only to the worker it has (raises if that worker died)."""
        proc = self._process
        if self._pool is not None and proc is not None and _has_died(proc):
            # It died while idle (the OOM killer, a kill -9): nothing of ours ran there.
            if not start:
                raise RuntimeError("the worker is gone")
            dead, self._pool = self._pool, None
            dead.shutdown(wait=False, kill_workers=True)
        pool = self.ensure_started() if start else self._pool
        if pool is None:
            raise RuntimeError("the worker is gone")
        inner = pool.submit(fn, *args, **kwargs)
        process = next(iter(pool._processes.values()), None)
        if process is not self._process:
            self._process = process
            if process is not None and process.pid is not None and self._watch is not None:
                self._watch.watch(process.pid)
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
            end_group(proc.pid)  # the worker and the children its task started
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
        proc = self._process
        if pool is not None and proc is not None and proc.pid is not None and (
            wait or not proc.is_alive()
        ):  # children its tasks left behind end with it
            end_group(proc.pid)


class Claims:
    """The claim files of one executor's work sent ahead: a worker starts such work only
    once it deletes its claim (see ``run_batch``); the driver deleting it first takes the
    work back. In ``/dev/shm`` where there is one."""

    def __init__(self, owner: object) -> None:
        self._prefix = f"flowforge-{os.getpid()}-ahead-{id(owner):x}-"
        self._numbers = itertools.count()

    def new(self) -> str | None:
        """A new claim file's path; None if it cannot be made."""
        from .._resultfiles.scratch import scratch_folder

        path = os.path.join(scratch_folder(), f"{self._prefix}{next(self._numbers)}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError:
            return None
        return path

    def remove_all(self) -> None:
        """Delete every claim file left behind: one whose worker was killed in the instant
        between starting its work and deleting the claim."""
        import glob

        from .._resultfiles.scratch import scratch_folder

        for path in glob.glob(os.path.join(scratch_folder(), f"{self._prefix}*")):
            with contextlib.suppress(OSError):
                os.unlink(path)


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

"""The process executor: loky workers, one per slot, with cloudpickle.

Each of the ``max_workers`` slots is a one-worker ``loky.ProcessPoolExecutor`` that runs
one piece of work at a time: a plain call, one task attempt, or a batch of small attempts
of one task. Why not one pool of N workers? When a loky worker dies (a segfault,
``os._exit``, the OOM killer, or FlowForge killing it for a timeout), loky fails *every*
in-flight and queued future of that pool, and the driver can no longer tell the attempt
that crashed from its bystanders. With one worker per slot the future that fails is the
attempt that crashed: nothing else is charged, and only that slot is restarted.

The engine decides what runs when; the executor keeps one queue and hands its head to
the first free slot. A slot's worker gets its next work only once it has reported the
last. The only measuring it does is for batching: a running average of attempt durations
per task (and per code object, the first guess for a new task of the same function)
says which attempts are small enough to batch (see :class:`ProcessExecutor`).

A worker slot (``Slot``) goes through three states, told apart by its ``jobs`` (the work
it holds) and ``sent`` (that work, once in its worker's pipe)::

                  _take(): the queue's head, or a batch of
                  small attempts of one task
     +---------+ ----------------------------------------> +-----------+
     |  FREE   |                                            |  PACKING  | pickled outside
     |  jobs:  | <---------------------------------------- |  jobs set | the lock
     |  None   |  all cancelled meanwhile, or none would    |  sent:    |
     +---------+  pickle (each fails naming the object)     |  None     |
          ^                                                 +-----------+
          |                                                       |
          |                  sent under the lock, after starting  |
          |                  a worker if the slot has none (or    |
          |                  its last one died while free)        v
          |   _finish(): outcomes set on the futures,       +-----------+
          +------------------------------------------------ |  RUNNING  |
              averages updated; the next work is taken      |  sent is  |
              at once (FREE -> PACKING)                     |  jobs     |
                                                            +-----------+

RUNNING -> FREE is also the way out when the worker dies (loky reports a broken pool):
the slot drops its pool and ``crash_error()`` names the exit code or signal; a lone
attempt fails with that :class:`WorkerCrashedError`, and a batch's attempts go back to the
queue to run one by one, so that only the one that crashes again is charged.
``cancel_running()`` cancels the attempt's future and SIGKILLs a RUNNING worker, which
then takes the same way out.

A worker found dead while free (a kill -9, the OOM killer) is replaced as work is sent to
it; nothing of ours ran there. Anything sent to a worker is sent under the executor's
lock, so a stop, a crash or a shutdown handled meanwhile finds it either sent or not.

Workers ignore SIGINT (the driver decides what Ctrl-C stops) and exit within about half a
second when the driver process dies, even in the middle of a task. On Linux they are
forked by the standard library's fork server through loky (``_private/forkserver.py``),
ready in milliseconds, rather than started as fresh interpreters.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from functools import partial
from typing import Any

from ..errors import WorkerCrashedError
from ._slot import Slot, is_broken_pool, is_shutdown
from .base import AttemptCall, Executor, default_workers

__all__ = ["ProcessExecutor"]

#: Batches aim at this much work (seconds), so a batch never holds up a slot for long.
BATCH_SECONDS = 0.005
#: Small attempts queued per worker beyond the one it runs: at most this much work.
QUEUE_SECONDS = 0.020
#: A task whose attempts take less than this on average is small enough to batch.
SMALL_SECONDS = 0.002
MAX_BATCH = 512
#: A batch whose attempts turn out slower than measured stops after this long (seconds)
#: and hands back the attempts it did not reach.
BATCH_LIMIT_SECONDS = 0.05
_EWMA = 0.2  # weight of the newest duration in a task's running average


class _Job:
    """One piece of work in the queue: a plain call, or one task attempt (``call``)."""

    __slots__ = ("future", "fn", "args", "kwargs", "call", "name", "solo")

    def __init__(
        self, future: Future[Any], fn: Callable[..., Any] | None, args: tuple[Any, ...],
        kwargs: dict[str, Any], call: tuple[Any, ...] | None = None, name: str = "",
        solo: bool = False,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.call = call  # (task, kwargs, env, policy): packed with others into one batch
        self.name = name
        self.solo = solo  # never batched: it has a timeout, or its batch's worker died


class ProcessExecutor(Executor):
    """Runs work in up to ``max_workers`` loky worker processes (default: CPU count).

    A result whose buffers (NumPy arrays and the like, pickle protocol 5) add up to
    ``share_threshold`` bytes or more is not sent back through the pipe: the worker writes
    it once to a file (the state folder with autosave, else ``/dev/shm``) and the tasks
    that need it map that file. ``None`` turns this off.

    Task attempts (:meth:`submit_attempt`) of a task whose attempts are measured to be small
    (under ``SMALL_SECONDS`` on average) are sent to a worker in batches of about
    ``BATCH_SECONDS`` of work, pickled together (the task's function once), and their
    outcomes come back together; the engine may queue up to :meth:`room` of them. A task
    not yet measured, a long one, or one with a timeout goes alone. A batch that runs
    over ``BATCH_LIMIT_SECONDS`` hands back the attempts it did not reach. When a worker
    dies mid-batch its outcomes are lost: every attempt of the batch runs again alone,
    those that had finished included (at least once, as after any crash), and only the
    one that kills its worker again is charged.
    """

    name = "process"
    on_cluster = False  # large results go to files on this machine (see SharesResults)

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
        self._lock = threading.RLock()  # re-entrant: see _launch
        self._slots = [Slot(i) for i in range(max_workers)]
        self._queued: deque[_Job] = deque()
        self._seconds: dict[str, float] = {}  # task name -> average attempt duration
        # the code a task runs -> its attempts' average duration: the first guess for
        # another task that runs the same code (many tasks of one function, as generated
        # graphs have), so that they too are batched from the start
        self._by_code: dict[Any, float] = {}
        self._closed = False  # shut down: what a dying worker hands back stays queued

    def start(self) -> None:
        """Start every worker now rather than at first use (they start in parallel), so
        that their start-up (a fork, or a fresh interpreter each) is over before the first
        attempt comes. ``shutdown()`` (which ``run()`` calls at its end) stops them."""
        with self._lock:
            self._closed = False
            for slot in self._slots:
                if not slot.started and slot.jobs is None:  # a slot whose worker was
                    slot.submit(os.getpid, (), {})  # killed restarts with its next jobs

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._enqueue(_Job(Future(), fn, args, kwargs))

    def submit_attempt(self, call: AttemptCall) -> Future[Any]:
        """Run one attempt (see :func:`~flowforge._private.remote.run_batch`); the
        future's result is the packed outcome, and its ``ran_for`` attribute the
        attempt's duration in the worker. ``call.solo``: never batch it (it has a
        timeout, or admission counts it)."""
        name = call.name
        if name not in self._seconds:  # a new task: what its code took so far, if known
            guess = self._by_code.get(_code_of(call.task))
            if guess is not None:
                self._seconds[name] = guess
        job = _Job(Future(), None, (), {}, (call.task, call.kwargs, call.env, call.policy),
                   name, call.solo)
        return self._enqueue(job)

    def room(self, name: str) -> int:
        """How many attempts of task ``name`` the engine may have here at once: one per
        worker; for a small task, as many as make ``QUEUE_SECONDS`` of work a worker."""
        seconds = self._seconds.get(name)
        if seconds is None or seconds >= SMALL_SECONDS:
            return self.max_workers
        per_worker = min(MAX_BATCH * 2, int(QUEUE_SECONDS / max(seconds, 1e-6)))
        return self.max_workers * (1 + per_worker)

    def _enqueue(self, job: _Job) -> Future[Any]:
        with self._lock:
            self._closed = False
            self._queued.append(job)
            slot = next((s for s in self._slots if s.jobs is None), None)
            jobs = self._take(slot) if slot is not None else None
        if jobs:
            assert slot is not None
            self._launch(slot, jobs)
        return job.future

    def _take(self, slot: Slot) -> list[_Job] | None:
        """Under the lock: the next jobs for free ``slot``, which it now holds."""
        queued = self._queued
        if not queued or self._closed:
            return None
        head = queued.popleft()
        jobs = [head]
        if head.call is not None and not head.solo:
            seconds = self._seconds
            each = seconds.get(head.name)
            if each is not None and each < SMALL_SECONDS:
                free = sum(1 for s in self._slots if s.jobs is None)
                share = -(-len(queued) // max(free, 1))  # leave work for the other free slots
                budget = min(MAX_BATCH - 1, share, int(BATCH_SECONDS / max(each, 1e-6)))
                while budget > 0 and queued:
                    nxt = queued[0]
                    if nxt.call is None or nxt.solo or nxt.name != head.name:
                        break
                    jobs.append(queued.popleft())
                    budget -= 1
        slot.jobs = jobs
        return jobs

    def cancel_running(self, future: Future[Any]) -> bool:
        """Stop the attempt behind ``future``: drop it if no worker has it yet, else kill
        (SIGKILL) the worker running it, whose slot restarts on next use."""
        with self._lock:
            for i, job in enumerate(self._queued):
                if job.future is future:
                    del self._queued[i]
                    future.cancel()
                    return True
            slot = next((s for s in self._slots if s.runs(future)), None)
            if slot is None:
                return future.cancel()
            future.cancel()  # never marked running, so this sticks; _finish then skips it
            if slot.sent is not slot.jobs:
                return True  # not sent yet: _launch drops it
            # Killed under the lock: the slot cannot have moved on to its next jobs, whose
            # worker this would be. The next jobs get a fresh worker.
            pool = slot.kill()
        if pool is not None:
            pool.shutdown(wait=False, kill_workers=True)
        return True

    def cancel_queued(self) -> list[Future[Any]]:
        """Cancel every task attempt still waiting here for a worker; their futures."""
        with self._lock:
            keep: deque[_Job] = deque()
            dropped = []
            for job in self._queued:
                if job.call is not None and job.future.cancel():
                    dropped.append(job.future)
                else:
                    keep.append(job)
            self._queued = keep
        return dropped

    def worker_pid(self, future: Future[Any]) -> int | None:
        """The pid of the worker process running ``future``, if it runs now."""
        with self._lock:
            slot = next((s for s in self._slots if s.runs(future)), None)
        proc = None if slot is None else slot._process
        return None if proc is None else proc.pid

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True  # from now on nothing starts a worker or queues again
            queued, self._queued = list(self._queued), deque()
            busy = [s for s in self._slots if s.started]
        for job in queued:
            job.future.cancel()
        if wait and len(busy) > 1:  # each waits for its worker to exit: all at once
            stops = [threading.Thread(target=s.stop, args=(True,)) for s in busy]
            for t in stops:
                t.start()
            for t in stops:
                t.join()
        else:
            for slot in busy:
                slot.stop(wait=wait)

    def _requeue(self, jobs: list[_Job]) -> None:
        """Under the lock: put ``jobs`` (which never started) back at the queue's head;
        after shutdown, cancel them instead, so no future waits forever."""
        if self._closed:
            for job in jobs:
                job.future.cancel()
        else:
            self._queued.extendleft(reversed(jobs))

    def _launch(self, slot: Slot, jobs: list[_Job]) -> None:
        """Send ``jobs`` (``slot.jobs``) to the slot's worker. Packing happens outside the
        lock; sending, under it, so that a stop, a crash or a shutdown handled meanwhile
        finds them either sent or not."""
        while True:
            live = [j for j in jobs if not j.future.cancelled()]  # cancelled meanwhile
            if len(live) < len(jobs):
                with self._lock:
                    jobs = slot.swap(jobs, live)
            if not jobs:
                self._finish(slot, jobs, None, None)
                return
            try:
                if jobs[0].call is None:
                    job = jobs[0]
                    assert job.fn is not None
                    fn, args, kwargs = job.fn, job.args, job.kwargs
                else:
                    packed, payload = self._pack(jobs)
                    if packed is not jobs:
                        with self._lock:
                            jobs = slot.swap(jobs, packed)
                    if not jobs:
                        self._finish(slot, jobs, None, None)
                        return
                    from .._private.remote import run_batch

                    names = [j.name for j in jobs]
                    budget = BATCH_LIMIT_SECONDS if len(jobs) > 1 else float("inf")
                    fn, args, kwargs = run_batch, (payload, names, budget), {}
            except KeyboardInterrupt:  # the run stops: they never start
                with self._lock:
                    slot.swap(jobs, None)
                for job in jobs:
                    job.future.cancel()
                raise
            except Exception as exc:
                self._finish(slot, jobs, None, exc)
                return
            failed: BaseException | None = None
            with self._lock:
                if any(j.future.cancelled() for j in jobs):
                    continue  # cancelled while packing: pack the rest again
                if jobs is not slot.jobs:
                    return  # stopped meanwhile
                if self._closed:
                    for job in jobs:
                        job.future.cancel()
                    slot.swap(jobs, None)
                    return
                try:  # a new worker starts here: under the lock, nothing stops it meanwhile
                    inner = slot.submit(fn, args, kwargs)
                except BaseException as exc:
                    # A pool that refused them (its worker died while idle) or failed to
                    # start a worker may still hold them: never use it again.
                    dead = slot.drop()
                    if dead is not None:
                        dead.shutdown(wait=False, kill_workers=True)
                    if not isinstance(exc, Exception):  # the run stops: never started
                        slot.swap(jobs, None)
                        for job in jobs:
                            job.future.cancel()
                        raise
                    if is_broken_pool(exc):
                        continue  # its worker died while idle: a new one takes them
                    failed = exc
                else:
                    slot.sent = jobs
                    # The lock is re-entrant: if they are done already, _finish runs here.
                    inner.add_done_callback(partial(self._finish, slot, jobs, error=None))
            if failed is not None:
                self._finish(slot, jobs, None, failed)
            return

    @staticmethod
    def _pack(jobs: list[_Job]) -> tuple[list[_Job], bytes]:
        """Pickle the attempts of a batch together. One that will not pickle fails alone,
        with the error that names its culprit; the rest go on."""
        from .._private.remote import pack_batch, pack_call

        try:
            return jobs, pack_batch([j.call for j in jobs])
        except Exception:
            good = []
            for job in jobs:
                try:
                    pack_call(*job.call)  # type: ignore[misc]
                except Exception as exc:
                    with contextlib.suppress(InvalidStateError):
                        job.future.set_exception(exc)
                else:
                    good.append(job)
            return good, pack_batch([j.call for j in good]) if good else b""

    def _finish(
        self, slot: Slot, jobs: list[_Job], inner: Future[Any] | None,
        error: BaseException | None,
    ) -> None:
        held = jobs  # the list as the slot knows it (``jobs`` may shrink below)
        with self._lock:
            if held is not slot.jobs:
                return  # stopped meanwhile: handled
        outcomes = None
        if inner is not None:
            if inner.cancelled():
                error = WorkerCrashedError("the worker was stopped", exitcode=None, signal=None)
            else:
                error = inner.exception()
                if error is not None and self._closed and is_shutdown(error):
                    for job in jobs:  # stopped by shutdown(wait=False): cancelled
                        job.future.cancel()
                    jobs, error = [], None
                elif error is not None and is_broken_pool(error):
                    error = slot.crash_error()
                    if len(jobs) > 1 and not slot.killed_on_purpose:
                        # Which attempt of the batch crashed its worker is unknown: run
                        # each again alone, so only the one that crashes is charged.
                        with self._lock:
                            for job in jobs:
                                job.solo = True
                            self._requeue(jobs)
                        jobs, error = [], None
                elif error is None and jobs and jobs[0].call is not None:
                    outcomes = inner.result()
        with self._lock:
            if outcomes is not None and len(outcomes) < len(jobs):
                # The batch ran over its time limit: what it did not reach goes again.
                self._requeue(jobs[len(outcomes):])
                jobs = jobs[: len(outcomes)]
            slot.jobs = slot.sent = None
            nxt = self._take(slot)
            if outcomes:  # one task's attempts (batches never mix tasks): one code
                seconds, by_code = self._seconds, self._by_code
                code = _code_of(jobs[0].call[0])  # type: ignore[index]
                for job, (_, ran_for) in zip(jobs, outcomes, strict=True):
                    seconds[job.name] = _average(seconds.get(job.name), ran_for)
                    by_code[code] = _average(by_code.get(code), ran_for)
        try:
            for i, job in enumerate(jobs):
                future = job.future
                try:
                    if error is not None:
                        future.set_exception(error)
                    elif outcomes is not None:
                        data, ran_for = outcomes[i]
                        future.ran_for = ran_for  # type: ignore[attr-defined]
                        future.set_result(data)
                    else:
                        assert inner is not None
                        future.set_result(inner.result())
                except InvalidStateError:  # cancelled meanwhile (a timeout, Ctrl-C)
                    pass
        finally:
            if nxt:
                self._launch(slot, nxt)


def _average(old: float | None, new: float) -> float:
    """A running average of attempt durations that follows recent ones."""
    return new if old is None else old + _EWMA * (new - old)


def _code_of(task: Any) -> Any:
    """What ``task`` runs, as a key for how long its attempts take: the code of its
    function or ``run`` method (closures and lambdas made in a loop share theirs)."""
    fn = getattr(task, "callable", task)
    return getattr(fn, "__code__", fn)

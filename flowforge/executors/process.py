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

A RUNNING slot may also hold work waiting behind its attempt in its worker's pipe
(``ahead``, then ``sent_ahead``), which the worker starts the instant the first ends,
without a round trip through the driver (about 0.35 ms saved per attempt; the engine
allows it only with autosave off and no admission, see ``AttemptCall.ahead``). It is sent
only behind attempts of tasks measured to be short (``AHEAD_SECONDS``), to the worker
expected to be free first. A measure can be wrong (a long item in a map of short ones),
so a worker starts what was sent ahead only once it deletes its claim file; a worker left
with nothing to do deletes the claim first and takes the work (``_take_back``). When the
attempt in front ends, what waited behind becomes the slot's ``jobs`` (RUNNING again); if
the worker dies, what waited never started: it is queued again, uncharged.

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
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from functools import partial
from typing import Any

from ..errors import WorkerCrashedError
from ._deathwatch import DeathWatch
from ._durations import Durations
from ._slot import Claims, Job, Slot, is_broken_pool, is_shutdown
from .base import AttemptCall, Executor, default_workers

__all__ = ["ProcessExecutor"]

#: Batches aim at this much work (seconds), so a batch never holds up a slot for long.
BATCH_SECONDS = 0.005
#: Small attempts queued per worker beyond the one it runs: at most this much work.
QUEUE_SECONDS = 0.020
#: A task whose attempts take less than this on average is small enough to batch.
SMALL_SECONDS = 0.002
MAX_BATCH = 512
#: An attempt may wait in a busy worker's pipe only behind attempts of tasks measured to
#: take at most this long (seconds): it saves a hand-over of about 0.35 ms, worth having
#: only for short attempts, and it must never wait long while another worker idles.
AHEAD_SECONDS = 0.1
#: A batch whose attempts turn out slower than measured stops after this long (seconds)
#: and hands back the attempts it did not reach.
BATCH_LIMIT_SECONDS = 0.05


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
        self._watch = DeathWatch()  # a worker's death is seen at once (_deathwatch.py)
        self._slots = [Slot(i, self._watch) for i in range(max_workers)]
        self._queued: deque[Job] = deque()
        self._durations = Durations()
        self._closed = False  # shut down: what a dying worker hands back stays queued
        self._claims = Claims(self)

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
        return self._enqueue(Job(Future(), fn, args, kwargs))

    def submit_attempt(self, call: AttemptCall) -> Future[Any]:
        """Run one attempt (see :func:`~flowforge._private.remote.run_batch`); the
        future's result is the packed outcome, and its ``ran_for`` attribute the
        attempt's duration in the worker. ``call.solo``: never batch it (it has a
        timeout, or admission counts it). ``call.ahead``: it may wait in a busy worker's
        pipe (see the module docstring); a run that stops then does not call it back: it
        runs, short of killing the worker."""
        self._durations.expect(call.name, call.task)
        job = Job(Future(), None, (), {}, (call.task, call.kwargs, call.env, call.policy),
                  call.name, call.solo, call.ahead)
        return self._enqueue(job)

    def room(self, name: str, ahead: bool = False) -> int:
        """How many attempts of task ``name`` the engine may have here at once: one per
        worker, plus with ``ahead`` one per worker that has or may take one waiting
        behind what it runs; for a small task, as many as make ``QUEUE_SECONDS`` of work
        a worker."""
        seconds = self._durations.of(name)
        if seconds is None or seconds >= SMALL_SECONDS:
            if not ahead:
                return self.max_workers
            with self._lock:
                now = time.monotonic()
                behind = sum(
                    1 for s in self._slots
                    if s.ahead is not None or self._ahead_until(s, now) is not None
                )
            return self.max_workers + behind
        per_worker = min(MAX_BATCH * 2, int(QUEUE_SECONDS / max(seconds, 1e-6)))
        return self.max_workers * (1 + per_worker)

    def _enqueue(self, job: Job) -> Future[Any]:
        with self._lock:
            self._closed = False
            self._queued.append(job)
            slot = next((s for s in self._slots if s.jobs is None), None)
            if slot is not None:
                jobs = self._take(slot)
            else:
                slot = self._first_free_again()
                jobs = self._take(slot, ahead=True) if slot is not None else None
        if jobs:
            assert slot is not None
            self._launch(slot, jobs)
        return job.future

    def _first_free_again(self) -> Slot | None:
        """Under the lock: of the busy slots that may take an attempt ahead, the one
        expected to finish first (at a run's end, when little is left to send, work must
        not wait in one worker's pipe while another frees up and idles)."""
        best, best_end = None, 0.0
        now = time.monotonic()
        for slot in self._slots:
            end = self._ahead_until(slot, now)
            if end is not None and (best is None or end < best_end):
                best, best_end = slot, end
        return best

    def _ahead_until(self, slot: Slot, now: float) -> float | None:
        """Under the lock: when ``slot``'s worker is expected to be done with what it runs,
        if work may be sent to wait behind that: it is sent, and each attempt of it
        belongs to a task measured to take at most ``AHEAD_SECONDS``, not running much
        longer than that measure. Else None: behind a long or unmeasured attempt, work
        could wait while other workers idle, and whatever depends on it too."""
        if not slot.takes_ahead():
            return None
        jobs = slot.jobs
        assert jobs is not None
        total = 0.0
        for job in jobs:
            each = self._durations.of(job.name)
            if each is None or each > AHEAD_SECONDS:
                return None
            total += each
        if now - slot.since > 2 * total + AHEAD_SECONDS:  # overrunning: long after all?
            return None
        return slot.since + total

    def _take_back(self, idle: Slot) -> list[Job] | None:
        """Under the lock: ``idle`` has nothing to run and nothing is queued. Take what
        waits behind another worker's attempt, so it runs here instead of waiting behind
        one that turned out long: still being packed (its ``_launch`` then finds it gone),
        or in that worker's pipe if the worker has not started it (deleting its claim
        first stops it). It moves whole and stays counted as running: nothing that stops
        a run drops it from the queue."""
        if self._closed:
            return None
        for other in self._slots:
            waiting = other.ahead
            if other is idle or waiting is None:
                continue
            if other.sent_ahead is waiting and not other.drop_claim():
                continue  # started already: it runs there
            other.ahead = other.sent_ahead = None
            idle.jobs = list(waiting)  # a new list: the one in the old pipe is ignored
            return idle.jobs
        return None

    def _take(self, slot: Slot, *, ahead: bool = False) -> list[Job] | None:
        """Under the lock: the next jobs for free ``slot``, which it now holds; with
        ``ahead``, jobs that may wait behind the attempt ``slot`` runs."""
        queued = self._queued
        if not queued or self._closed or (ahead and not queued[0].ahead):
            return None
        head = queued.popleft()
        jobs = [head]
        if head.call is not None and not head.solo:
            each = self._durations.of(head.name)
            if each is not None and each < SMALL_SECONDS:
                free = sum(1 for s in self._slots if s.jobs is None)
                share = -(-len(queued) // max(free, 1))  # leave work for the other free slots
                budget = min(MAX_BATCH - 1, share, int(BATCH_SECONDS / max(each, 1e-6)))
                while budget > 0 and queued:
                    nxt = queued[0]
                    if nxt.call is None or nxt.solo or nxt.name != head.name or (
                        ahead and not nxt.ahead
                    ):
                        break
                    jobs.append(queued.popleft())
                    budget -= 1
        if ahead:
            slot.ahead = jobs
        else:
            slot.jobs = jobs
        return jobs

    def cancel_running(self, future: Future[Any]) -> bool:
        """Stop the attempt behind ``future``: drop it if no worker has it yet, else kill
        (SIGKILL) the worker running it, whose slot restarts on next use. An attempt
        waiting in a busy worker's pipe is cancelled, and runs unreported unless the one
        in front is stopped too (timed attempts never have one waiting behind them)."""
        with self._lock:
            for i, job in enumerate(self._queued):
                if job.future is future:
                    del self._queued[i]
                    future.cancel()
                    return True
            slot = next((s for s in self._slots if s.holds(future)), None)
            if slot is None:
                return future.cancel()
            future.cancel()  # never marked running, so this sticks; _finish then skips it
            if not slot.runs(future) or slot.sent is not slot.jobs:
                return True  # not started: _launch drops it, or it waits behind another
            # Killed under the lock: the slot cannot have moved on to its next jobs, whose
            # worker this would be. The next jobs get a fresh worker; those sent behind
            # these die with it.
            pool = slot.kill()
            stopped = slot.pop_sent_ahead()
        if pool is not None:
            pool.shutdown(wait=False, kill_workers=True)
        error = WorkerCrashedError("the worker was stopped", exitcode=None, signal=None)
        for job in stopped:
            with contextlib.suppress(InvalidStateError):
                job.future.set_exception(error)
        return True

    def cancel_queued(self) -> list[Future[Any]]:
        """Cancel every task attempt still waiting here for a worker; their futures."""
        with self._lock:
            keep: deque[Job] = deque()
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
            if not wait:  # their workers are killed: what waits behind never starts
                for slot in self._slots:
                    queued.extend(slot.ahead or ())
                    slot.ahead = slot.sent_ahead = None
                    slot.drop_claim()
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
        with self._lock:  # a claim whose worker died before it took it
            for slot in self._slots:
                slot.drop_claim()
            self._claims.remove_all()

    def _requeue(self, jobs: list[Job]) -> None:
        """Under the lock: put ``jobs`` (which never started) back at the queue's head;
        after shutdown, cancel them instead, so no future waits forever."""
        if self._closed:
            for job in jobs:
                job.future.cancel()
        else:
            self._queued.extendleft(reversed(jobs))

    def _launch(self, slot: Slot, jobs: list[Job]) -> None:
        """Send ``jobs`` (``slot.jobs``, or ``slot.ahead`` to wait behind them) to the
        slot's worker. Packing happens outside the lock; sending, under it, so that a
        stop, a crash or a shutdown handled meanwhile finds them either sent or not."""
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
            more = None
            with self._lock:
                if any(j.future.cancelled() for j in jobs):
                    continue  # cancelled while packing: pack the rest again
                current = jobs is slot.jobs
                if not current and jobs is not slot.ahead:
                    return  # stopped or taken back meanwhile
                if self._closed:
                    for job in jobs:
                        job.future.cancel()
                    slot.swap(jobs, None)
                    return
                claim = None
                if not current:  # its worker deletes this file as it starts them
                    claim = self._claims.new()
                    if claim is None:  # no claim, no way to take them back: not ahead
                        slot.swap(jobs, None)
                        self._requeue(jobs)
                        return
                    slot.claim = claim
                try:  # a new worker starts here: under the lock, nothing stops it meanwhile
                    call_args = args if claim is None else (*args, claim)
                    inner = slot.submit(fn, call_args, kwargs, start=current)
                except BaseException as exc:
                    if current:  # a pool that refused them (its worker died while idle)
                        # or failed to start a worker may still hold them: never use it
                        dead = slot.drop()
                        if dead is not None:
                            dead.shutdown(wait=False, kill_workers=True)
                    if not isinstance(exc, Exception):  # the run stops: never started
                        slot.swap(jobs, None)
                        for job in jobs:
                            job.future.cancel()
                        raise
                    if not current:  # the worker in front died: they never started
                        slot.swap(jobs, None)
                        self._requeue(jobs)
                        return
                    if is_broken_pool(exc):
                        continue  # its worker died while idle: a new one takes them
                    failed = exc
                else:
                    if current:
                        slot.sent = jobs
                        slot.since = time.monotonic()
                    else:
                        slot.sent_ahead = jobs
                    # Registered before anything can be sent behind these, so loky's
                    # thread always reports them first (the lock is re-entrant: if they
                    # are done already, _finish runs here).
                    inner.add_done_callback(partial(self._finish, slot, jobs, error=None))
                    if current and self._ahead_until(slot, slot.since) is not None:
                        more = self._take(slot, ahead=True)
            if failed is not None:
                self._finish(slot, jobs, None, failed)
                return
            if not more:
                return
            jobs = more

    @staticmethod
    def _pack(jobs: list[Job]) -> tuple[list[Job], bytes]:
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
        self, slot: Slot, jobs: list[Job], inner: Future[Any] | None,
        error: BaseException | None,
    ) -> None:
        held = jobs  # the list as the slot knows it (``jobs`` may shrink below)
        with self._lock:
            if held is not slot.jobs and held is not slot.ahead:
                return  # stopped, or sent behind a worker that then died: handled
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
                    with self._lock:
                        waited = held is slot.ahead and not slot.killed_on_purpose
                        if waited:  # it never started: its worker died under the one
                            # in front, whose own report says what happened
                            slot.ahead = slot.sent_ahead = None
                            slot.drop_claim()
                            self._requeue(held)
                    if waited:
                        return
                    error = slot.crash_error()
                    with self._lock:  # what waited behind it never started: again
                        self._requeue(slot.pop_sent_ahead())
                    if len(jobs) > 1 and not slot.killed_on_purpose:
                        # Which attempt of the batch crashed its worker is unknown: run
                        # each again alone, so only the one that crashes is charged.
                        with self._lock:
                            for job in jobs:
                                job.solo = True
                                job.ahead = False
                            self._requeue(jobs)
                        jobs, error = [], None
                elif error is None and jobs and jobs[0].call is not None:
                    outcomes = inner.result()
        with self._lock:
            if outcomes is not None and len(outcomes) < len(jobs):
                # The batch ran over its time limit: what it did not reach goes again.
                self._requeue(jobs[len(outcomes):])
                jobs = jobs[: len(outcomes)]
            if held is slot.jobs:  # what waited behind it runs now (or once it is sent)
                slot.jobs, slot.ahead = slot.ahead, None
                slot.sent = slot.jobs if slot.sent_ahead is slot.jobs else None
                slot.sent_ahead = None
                slot.claim = None  # its worker takes it now: it counts as running
                slot.since = time.monotonic()  # the worker went on to them as it ended
            elif held is slot.ahead:  # it ended before the one in front reported
                slot.ahead = slot.sent_ahead = None
                slot.claim = None
            if slot.jobs is None:
                nxt = self._take(slot) or self._take_back(slot)
            else:
                nxt = (
                    self._take(slot, ahead=True)
                    if self._ahead_until(slot, time.monotonic()) is not None else None
                )
            if outcomes:  # one task's attempts (batches never mix tasks): one code
                self._durations.record(jobs[0].name, jobs[0].call[0],  # type: ignore[index]
                                       [ran_for for _, ran_for in outcomes])
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


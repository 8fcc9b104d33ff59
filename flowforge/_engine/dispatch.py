"""Handing attempts to executors and taking their outcomes back.

The loop decides *what* starts and *when*; a :class:`Dispatcher` only runs what it is
given, where it is told, and reports how it went. It owns what that needs:

* ``running``: each in-flight future and its :class:`Attempt`; ``inflight`` counts them
  per executor, so the loop never hands an executor more than it has workers for;
* ``inbox``: executors' futures post themselves here when done; the loop blocks on it
  (and the cancel token wakes it by posting ``None``);
* the fixtures made in the driver, the memory watch of process workers, and the work
  that is cheaper done here than handed over (see :meth:`Dispatcher.launch`).

An outcome is ``(ok, value_or_error, duration)``: the loop never sees a packed result,
a future or a worker crash in an executor's own terms.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Mapping, Sized
from concurrent.futures import Future
from dataclasses import dataclass
from time import perf_counter
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NamedTuple

from .._async import unawaited
from .._fixtures import FixturePool, resolve_refs
from ..errors import (
    MemoryLimitExceeded,
    TaskExitError,
    TaskSerializationError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from ..executors.base import (
    AttemptCall,
    Batching,
    InProcess,
    TakesAttempts,
    WorkerProcesses,
)

if TYPE_CHECKING:
    from .._binding import Binding
    from .._memory import MemoryWatch
    from ..executors.base import Executor
    from .admission import NullAdmission, RunAdmission
    from .results import ResultStore
    from .timers import Timers

__all__ = ["Attempt", "Dispatcher", "Outcome", "exit_error", "timeout_error"]

#: ``(ok, value or error, seconds)`` of one finished attempt.
Outcome = tuple[bool, Any, float]


class Abilities(NamedTuple):
    """What one executor can do beyond the required contract (see
    :mod:`flowforge.executors.base`), each the executor itself or None; read once per
    run, since a Protocol ``isinstance`` costs microseconds."""

    in_process: InProcess | None
    takes_attempts: TakesAttempts | None
    batching: Batching | None
    worker_processes: WorkerProcesses | None
    here_alone: bool  # in_process.may_run_here(True), asked once
    here_busy: bool  # in_process.may_run_here(False), asked once

    @classmethod
    def of(cls, ex: Executor) -> Abilities:
        local = ex if isinstance(ex, InProcess) else None
        return cls(
            local,
            ex if isinstance(ex, TakesAttempts) else None,
            ex if isinstance(ex, Batching) else None,
            ex if isinstance(ex, WorkerProcesses) else None,
            local is not None and local.may_run_here(True),
            local is not None and local.may_run_here(False),
        )


@dataclass(slots=True)
class Attempt:
    """One attempt in flight: of task ``name`` (``index`` >= 0: one of its map items or
    loop iterations), its number, when it started (``perf_counter``) and where."""

    name: str
    number: int
    executor: Executor
    index: int = -1
    started: float = 0.0  # when it was handed to its executor
    future: Future[Any] | None = None


#: An attempt measured to take less than this may run where a cancel cannot abandon it.
QUICK_SECONDS = 0.005


def exit_error(name: str, exc: SystemExit) -> TaskExitError:
    """What a task that called ``sys.exit()`` is reported with."""
    code = exc.code
    shown = "" if code is None else repr(code)
    error = TaskExitError(
        f"task {name!r} called sys.exit({shown}); raise an exception to fail a task, or "
        "return to end it",
        task=name, exit_code=code,
    )
    error.__cause__ = exc
    return error


def _task_error(name: str, exc: BaseException) -> BaseException:
    """A task's error as the run reports it: ``sys.exit()`` becomes a TaskExitError,
    anything else is itself."""
    return exit_error(name, exc) if isinstance(exc, SystemExit) else exc


def timeout_error(attempt: Attempt, timeout: float | None, killed: bool) -> TaskTimeoutError:
    """The error of an attempt that ran past its ``timeout``; ``killed``: its worker was
    killed, else it was abandoned where it runs."""
    how = (
        "its worker process was killed" if killed
        else "it cannot be interrupted where it runs (a thread, or a Dask task), so it was "
        "abandoned"
    )
    return TaskTimeoutError(
        f"task {attempt.name!r} attempt {attempt.number} timed out after {timeout}s ({how}); "
        "raise timeout= or make the task faster",
        task=attempt.name,
        timeout=timeout,
    )


class Dispatcher:
    """Runs attempts on the run's executors (see the module docstring)."""

    def __init__(
        self,
        executor: Executor,
        task_executors: Mapping[str, Executor],
        store: ResultStore,
        admission: RunAdmission | NullAdmission,
        ready: Sized,
        timers: Timers,
        *,
        limited: bool,
        inline: bool,
        send_ahead: bool,
    ) -> None:
        self.default = executor
        self.by_task = task_executors
        self.running: dict[Future[Any], Attempt] = {}
        self.inflight: dict[Executor, int] = {}
        self.inbox: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
        #: The task whose attempt is being run or handed over in this thread (Ctrl-C
        #: cancels it).
        self.current: str | None = None
        self._store = store
        self._admission = admission
        self._ready = ready  # the loop's ready queue and timers, read to tell whether
        self._timers = timers  # an attempt is alone (nothing else ready or due)
        self._limited = limited  # admission control is on: never batch an attempt
        #: Attempts may run in the loop's own thread (the executor says when): not when
        #: the run has a timeout. ``inline_alone``: also a lone attempt of an executor
        #: that has threads of its own (thread), which a cancel could otherwise abandon.
        self.inline = inline
        self.inline_alone = True
        #: Where a cancel cannot interrupt the loop's thread by SIGINT (see Engine.run),
        #: a sequential attempt runs there only once its code is measured to be quick:
        #: one that may block long goes to the run's attempt thread, which a cancel can
        #: abandon (a hand-over costs tens of microseconds: quick ones stay here).
        self.quick_only = False
        self._quick: dict[Any, float] = {}  # code -> its attempts' running average
        self._measuring: dict[Future[Any], Any] = {}  # attempt thread's futures -> code
        #: A cancel asked to end the attempts' child processes too (``--force``).
        self.force = False
        self._ahead = send_ahead  # attempts may wait in busy workers' pipes (AttemptCall)
        self._pool = FixturePool()
        self._memory: MemoryWatch | None = None
        self._offload: Executor | None = None  # see _attempt_thread
        self.can = {ex: Abilities.of(ex) for ex in self.executors()}

    # -- where ---------------------------------------------------------------------

    def executors(self) -> set[Executor]:
        return {self.default, *self.by_task.values()}

    def isolated(self) -> Iterable[Executor]:
        """The executors whose attempts run in other processes (pickled)."""
        return (ex for ex, can in self.can.items() if can.in_process is None)

    def queues(self, ex: Executor, name: str, timed: bool) -> bool:
        """Whether ``ex``, all of whose workers are busy, takes one more attempt of
        ``name`` in its queue: a batching executor does for a small task, never for a
        timed one (its timeout must start when it really starts), and none under
        admission control."""
        if timed or self._limited:  # admission counts what runs: nothing waits queued
            return False
        batching = self.can[ex].batching
        return batching is not None and self.inflight[ex] < batching.room(name, self._ahead)

    # -- starting --------------------------------------------------------------------

    def launch(
        self, name: str, number: int, index: int, ex: Executor, b: Binding,
        kwargs: dict[str, Any],
    ) -> Outcome | Attempt:
        """Start attempt ``number`` of ``name`` (``index`` >= 0: of one of its units) on
        ``ex``. Returns its outcome when it ran (or failed) right here, its
        :class:`Attempt` when it was handed to its executor.

        It runs in this thread when its executor says that is cheaper and safe (the
        sequential executor always; the thread executor for a lone attempt, a chain,
        where a pool thread would cost two thread switches and buy no parallelism)."""
        can = self.can[ex]
        if can.in_process is not None and (self._store.handles or b.uses_fixtures):
            try:
                kwargs = self._store.local_inputs(kwargs)
                if b.uses_fixtures:
                    resolve_refs(kwargs, self._pool)
            except Exception as exc:  # a fixture's set-up, a held result lost: it fails
                return False, exc, 0.0
        timeout = b.task.timeout
        if timeout is None and (
            (can.here_busy and (not self.quick_only or self._is_quick(b.call)))
            or (can.here_alone and self.inline_alone and not self.running
                and not self._ready
                and not self._timers.delayed and self._timers.token_due is None)
        ) and self.inline:
            self.current = name
            t0 = perf_counter()
            try:
                value = b.call(**kwargs)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: as on the pool paths
                self.current = None
                return False, _task_error(name, exc), perf_counter() - t0
            self.current = None
            if self.quick_only:
                self._note(getattr(b.call, "__code__", b.call), perf_counter() - t0)
            if value.__class__ is CoroutineType:
                return False, unawaited(name, value), perf_counter() - t0
            return True, value, perf_counter() - t0
        attempt = Attempt(name, number, ex, index, perf_counter())
        self.current = name
        try:
            future = self._submit(attempt, can, b, kwargs, timeout is not None)
        except TaskSerializationError as exc:
            self.current = None
            return False, exc, perf_counter() - attempt.started
        self.current = None
        attempt.future = future
        self.running[future] = attempt
        if self.quick_only and can.here_busy and timeout is None:
            self._measuring[future] = getattr(b.call, "__code__", b.call)
        self.inflight[ex] = self.inflight.get(ex, 0) + 1
        if self._limited and can.worker_processes is not None:
            self._watch_memory(attempt, future, can.worker_processes)
        future.add_done_callback(self.inbox.put)
        return attempt

    def _submit(
        self, attempt: Attempt, can: Abilities, b: Binding, kwargs: dict[str, Any],
        timed: bool,
    ) -> Future[Any]:
        ex = attempt.executor
        if can.in_process is not None:
            # An executor that runs work in the caller's thread (the sequential one)
            # gets here only when the loop must not block: a timed attempt, a run with a
            # deadline, or one a cancel could not interrupt here (see Engine.run). Its
            # submit would block all the same: a timed attempt gets a thread of its own
            # (abandoned at its timeout), the others the run's one attempt thread.
            if timed:
                return can.in_process.submit_timed(b.call, **kwargs)
            if can.here_busy:
                return self._attempt_thread().submit(b.call, **kwargs)
            return ex.submit(b.call, **kwargs)
        gpus = self._admission.gpus_of(attempt.name, attempt.index)
        env = None if gpus is None else {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        policy = self._store.file_policies.get(ex)
        if can.takes_attempts is not None:
            return can.takes_attempts.submit_attempt(AttemptCall(
                b.task, kwargs, env, policy, attempt.name,
                solo=timed or self._limited, ahead=self._ahead and not timed,
            ))
        from .._private.remote import pack_call, run_packed

        return ex.submit(run_packed, pack_call(b.task, kwargs, env, policy), attempt.name)

    def _is_quick(self, call: Any) -> bool:
        return self._quick.get(getattr(call, "__code__", call), 1.0) < QUICK_SECONDS

    def _note(self, code: Any, seconds: float) -> None:
        old = self._quick.get(code)
        self._quick[code] = seconds if old is None else old + 0.2 * (seconds - old)

    def _attempt_thread(self) -> Executor:
        """One thread for this run's attempts that may not run in the loop's thread (a
        thread per attempt would cost its start each time)."""
        if self._offload is None:
            from ..executors.thread import ThreadExecutor

            self._offload = ThreadExecutor(1)
        return self._offload

    def _watch_memory(
        self, attempt: Attempt, future: Future[Any], ex: WorkerProcesses
    ) -> None:
        limit = self._admission.memory_of(attempt.name, attempt.index)
        if not limit:
            return
        if self._memory is None:
            from .._memory import MemoryWatch

            self._memory = MemoryWatch()
        self._memory.watch(future, lambda: ex.worker_pid(future), limit,
                           lambda: attempt.executor.cancel_running(future))

    # -- finishing -------------------------------------------------------------------

    def wait(self, timeout: float | None) -> list[Future[Any] | None]:
        """The futures done so far, waiting up to ``timeout`` seconds for the first."""
        inbox = self.inbox
        try:
            first = inbox.get_nowait() if timeout == 0.0 else inbox.get(timeout=timeout)
        except queue.Empty:
            return []
        done = [first]
        while True:
            try:
                done.append(inbox.get_nowait())
            except queue.Empty:
                return done

    def take(self, future: Future[Any] | None) -> Attempt | None:
        """Stop tracking ``future``: its attempt, or None if it was no longer tracked (it
        timed out or was cancelled earlier, and this is its late answer)."""
        attempt = self.running.pop(future, None)  # type: ignore[arg-type]
        if attempt is not None:
            self.inflight[attempt.executor] -= 1
        return attempt

    def outcome(self, attempt: Attempt, future: Future[Any]) -> Outcome:
        """How the attempt behind a done future went, in the loop's terms."""
        duration = getattr(future, "ran_for", None)  # as measured by a batching worker
        if duration is None:
            duration = perf_counter() - attempt.started
        if self._measuring:
            code = self._measuring.pop(future, None)
            if code is not None:
                self._note(code, duration)
        name = attempt.name
        over = None if self._memory is None else self._memory.exceeded.pop(future, None)
        if over is not None:
            from .._memory import margin

            limit, peak = over
            return False, MemoryLimitExceeded(
                f"task {name!r} attempt {attempt.number} used {peak / 2**20:.0f} MiB, over its "
                f"memory={limit / 2**20:.0f} MiB (+{margin(limit) / 2**20:.0f} MiB margin); "
                "its worker was killed. Raise Resources(memory=...) or use less",
                task=name, limit=limit, peak=peak,
            ), duration
        try:
            value = future.result()
            if self.can[attempt.executor].in_process is None:
                from .._private.remote import unpack_outcome

                value = unpack_outcome(value, name)
            elif value.__class__ is CoroutineType:
                return False, unawaited(name, value), duration
        except WorkerCrashedError as exc:
            return False, WorkerCrashedError(
                f"task {name!r} attempt {attempt.number} failed: {exc.message}; the run "
                "goes on with a fresh worker",
                task=name,
                exitcode=getattr(exc, "exitcode", None),
                signal=getattr(exc, "signal", None),
            ), duration
        except BaseException as exc:  # the task's own error, whatever its class
            return False, _task_error(name, exc), duration
        return True, value, duration

    # -- stopping --------------------------------------------------------------------

    def stop(self, future: Future[Any]) -> bool:
        """Stop the attempt behind ``future``: True if it was stopped (a process worker
        killed), False if it could only be abandoned (a thread). With :attr:`force`, a
        worker's child processes end first."""
        attempt = self.running.get(future)
        ex = attempt.executor if attempt is not None else self.default
        if self.force:
            workers = self.can[ex].worker_processes
            pid = None if workers is None else workers.worker_pid(future)
            if pid is not None:
                from .._private.children import end_descendants

                end_descendants(pid)
        return ex.cancel_running(future)

    def end_children(self, since: float) -> None:
        """``--force``: end the child processes the run's in-process attempts started
        (the driver's, started at ``since`` or later; see :mod:`~flowforge._private.children`)."""
        if not self.force or all(can.in_process is None for can in self.can.values()):
            return
        import os

        from .._private.children import end_run_children

        spare = []
        for future, attempt in self.running.items():
            workers = self.can[attempt.executor].worker_processes
            pid = None if workers is None else workers.worker_pid(future)
            if pid is not None:
                spare.append(pid)
        end_run_children(os.getpid(), since, spare)

    def drop_queued(self) -> list[Attempt]:
        """The attempts batching executors hold but have not sent to a worker: they will
        never start (the run stops); no longer tracked."""
        dropped = []
        for ex in {a.executor for a in self.running.values()}:
            batching = self.can[ex].batching
            if batching is None:
                continue
            for future in batching.cancel_queued():
                attempt = self.take(future)
                if attempt is not None:
                    dropped.append(attempt)
        return dropped

    def shutdown(self) -> None:
        """Stop every worker of the run and tear down the driver's fixtures (stopped
        attempts were killed or abandoned)."""
        if self._memory is not None:
            self._memory.stop()
        if self._offload is not None:  # an abandoned attempt keeps its daemon thread
            self._offload.shutdown(wait=False)
        for ex in self.executors():
            try:
                ex.shutdown(wait=True)
            except Exception:  # pragma: no cover - never let cleanup hide the result
                pass
        self._pool.close()

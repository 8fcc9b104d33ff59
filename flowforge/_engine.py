"""The one scheduling loop every executor shares.

States
------
Each task has a :class:`~flowforge.result.TaskRun` whose ``state`` follows
:mod:`flowforge.states`: PENDING -> RUNNING -> SUCCEEDED | FAILED, with RUNNING -> PENDING
while a retry waits out its delay, PENDING -> SKIPPED when an upstream failed under
``on_error="continue"``, and -> CANCELLED on Ctrl-C or the run's timeout.

Data structures
---------------
* ``ReadySet`` (from :mod:`flowforge.dag`) counts, per task, the upstreams not yet done;
  a task whose count reaches zero joins ``ready``, a FIFO deque.
* ``running`` maps each in-flight future to its attempt (task, number, start, executor).
  Executors' futures post themselves to ``inbox`` (a ``SimpleQueue``) when done; the loop
  blocks on that queue only, so it wakes for a finished task, a deadline or Ctrl-C.
* ``deadlines`` is a heap of attempt timeouts; ``delayed`` a heap of retries waiting for
  their backoff. Both are read against the injected clock, never ``time`` directly.

Task selection policy
---------------------
Ready tasks start in the order they became ready (FIFO), as long as their executor has a
free worker; the loop never submits more than ``max_workers`` attempts to an executor, so
an attempt's timeout starts when it really starts. There are no level-by-level barriers:
a task starts as soon as its own upstreams are done.

Two shortcuts keep the per-task cost near a plain function call:

* an *inline* executor (sequential) is not called through a future at all: the loop calls
  the task itself, which saves the future's lock and callback (~3 µs a task);
* on the thread executor, when exactly one task is ready and nothing else runs (a chain),
  the loop runs it in its own thread: handing it to a pool thread and waiting for the
  answer would cost two thread switches (~80 µs) and buy no parallelism.

Persistence
-----------
With autosave on, a :class:`~flowforge.persistence.manager.RunSession` rides along. Each
final outcome is saved *before* its event is published, so a task reported finished is
on disk. Tasks restored from an earlier run start SUCCEEDED and count as done in the
ready set; their results are not unpickled until a task that runs needs them (``results``
loads a missing key from the session). ``consumers_left`` counts, per task, the tasks
downstream still to start; when it reaches zero and the result is saved, the engine drops
its reference, so a long pipeline of large objects holds only the ones still needed. A
save that fails (a full disk) stops the run like a fail-fast failure, with a StateError.

Process workers and clusters
----------------------------
An executor that ``takes_tasks`` gets each attempt unpickled and packs it itself. The
process executor sends a small task's attempts in batches and lets the engine queue more
of them than it has workers (``room``). When nothing is saved (autosave off) it also
sends each busy worker its next attempt ahead, so the worker starts it without waiting
for the driver; with autosave on it does not, so that a kill -9 re-runs only the attempts
that were running. The Dask executor leaves large results on its workers. A large result
never enters the driver: ``results`` holds a handle (a file mapped on demand, or a Dask
future; see :mod:`flowforge._private.handoff`) that isolated workers receive as it is and
that the driver maps or fetches only for its own needs (a thread task's input, a
condition, a branch, a map's list) and at the end of the run.

Failures
--------
A failed attempt is retried while attempts remain and the error matches ``retry_on``;
its delay is ``retry_delay * backoff**(k-1)`` (see :meth:`Task.retry_delay_for`). A final
failure under ``fail_fast`` stops new starts (running attempts finish, the rest stay
PENDING); under ``continue`` it skips everything downstream and the rest goes on.
"""

from __future__ import annotations

import dataclasses
import heapq
import queue
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._admission import Admission, Admitting, Grant, Request
from ._binding import FROM_PARAM, FROM_RESOURCE, FROM_TASK, Binding, call_hook
from ._control import Gate, Gating
from ._fanout import Fan, Fanning
from ._placing import Placing
from ._private.gcpause import paused_gc
from ._private.handoff import (
    Spill,
    hold_all,
    materialize,
    materialize_inputs,
    remove_files,
)
from ._recording import HeldResults, Recording
from ._shared import ResourcePool, ResourceRef, resolve_refs
from ._waiting import Waiting
from .bus import EventBus
from .clock import Clock
from .dag import CompiledDAG
from .errors import (
    MemoryLimitExceeded,
    StateError,
    TaskError,
    TaskSerializationError,
    WorkerCrashedError,
    WorkflowTimeoutError,
)
from .events import (
    TaskCancelled,
    TaskFailed,
    TaskRetrying,
    TaskStarted,
    TaskSucceeded,
    WorkflowFinished,
    WorkflowStarted,
)
from .executors.base import Executor
from .executors.thread import ThreadExecutor
from .metrics import RunMetrics
from .result import Results, RunResult, TaskRun
from .states import RunStatus, TaskState, check_transition
from .task import TaskContext

if TYPE_CHECKING:
    from ._memory import MemoryWatch
    from .persistence.session import RunSession

__all__ = ["Engine"]

@dataclass(slots=True)
class _Attempt:
    name: str
    number: int
    started: float
    executor: Executor
    index: int = -1  # a map item or loop iteration; -1 for the task itself


class Engine(Placing, Waiting, Recording, Fanning, Admitting, Gating):
    """Runs one workflow run to completion; use once."""

    def __init__(
        self,
        *,
        workflow: str,
        run_id: str,
        graph: CompiledDAG,
        bindings: Mapping[str, Binding],
        params: Mapping[str, Any],
        executor: Executor,
        task_executors: Mapping[str, Executor],
        on_error: str,
        timeout: float | None,
        clock: Clock,
        bus: EventBus,
        log_file: str | None = None,
        log_console: bool = False,
        session: RunSession | None = None,
        resources: Mapping[str, ResourceRef] | None = None,
        admission: Admission | None = None,
        requests: Mapping[str, Request] | None = None,
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self._graph = graph
        self._bindings = bindings
        self._params = params
        self._executor = executor
        self._task_executors = task_executors
        self._fail_fast = on_error == "fail_fast"
        self._timeout = timeout
        self._clock = clock
        self._bus = bus
        self._log_file = log_file
        self._log_console = log_console

        self.tasks: dict[str, TaskRun] = {n: TaskRun(n) for n in graph.order}
        self.results: dict[str, Any] = {} if session is None else HeldResults(session.load)
        self._ready_set = graph.ready_set()
        self._session = session
        self._gate = Gate(graph, bindings, self.tasks)
        self._resources = {
            n: dataclasses.replace(r, key=run_id) for n, r in (resources or {}).items()
        }
        self._pool = ResourcePool()
        self._admission = admission
        self._requests = dict(requests or {})
        self._grants: dict[tuple[str, int], Grant] = {}
        self._wait_since: dict[tuple[str, int], float] = {}
        self._wait_reasons: dict[tuple[str, int], str] = {}
        self._gate_passed: set[str] = set()
        self._token_due: float | None = None
        self._memory: MemoryWatch | None = None
        self._fanned = {n for n, b in bindings.items() if b.task.map or b.task.loop}
        self._branches = {n for n, b in bindings.items() if b.task.branch}
        self._fans: dict[str, Fan] = {}
        self._saved: set[str] = set()
        self._consumers_left: dict[str, int] | None = None
        if session is not None:
            self._restore(session)
        self._ready: deque[str | tuple[str, int]] = deque()
        self._running: dict[Future[Any], _Attempt] = {}
        self._inflight: dict[Executor, int] = {}
        self._deadlines: list[tuple[float, int, Future[Any]]] = []
        self._delayed: list[tuple[float, int, str | tuple[str, int]]] = []
        self._seq = 0
        self._inbox: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self._stopping = False
        self._inline_task: str | None = None
        self._run_deadline: float | None = None
        self._first_error: BaseException | None = None
        self._timed_out = False

        self._spills: dict[Executor, Spill] = {}  # process executors sharing large results
        # Attempts may wait in a busy worker's pipe (see ProcessExecutor.submit_task) when
        # nothing is saved: with autosave on, a kill -9 re-runs only what was running.
        self._send_ahead = session is None and admission is None
        self._handles = False  # results may be handles (see _private/handoff): map them
        self._emit_started = bus.wants(TaskStarted)
        self._emit_succeeded = bus.wants(TaskSucceeded)
        self._emit_failed = bus.wants(TaskFailed)

    # -- the run ---------------------------------------------------------------------

    def run(self, *, executor_label: str = "") -> RunResult:
        started = time.time()
        t0 = time.perf_counter()
        session = self._session
        self._publish(
            WorkflowStarted,
            total_tasks=len(self.tasks),
            executor=executor_label or getattr(self._executor, "name", "custom"),
            params=dict(self._params),
            resumed=session is not None and session.resumed,
            restored=0 if session is None else len(session.restored),
            reasons={} if session is None or not session.resumed else session.plan.reasons(),
            notes=() if session is None else tuple(session.plan.notes),
        )
        if self._timeout is not None:
            self._run_deadline = self._clock.monotonic() + self._timeout
        cancelled = False
        try:
            self._plan_spills()
            self._ready.extend(self._ready_set.get_ready())
            self._loop()
        except KeyboardInterrupt:
            cancelled = True
            self._cancel_all("interrupted (Ctrl-C)")
        finally:
            if self._memory is not None:
                self._memory.stop()
            if self._handles:  # before the executors stop: a cluster's results go too
                hold_all(self.results)
            self._shutdown_executors()
            self._pool.close()
            if self._spills:
                remove_files(self._spills)
        for name in self._fans:  # a map or loop whose remaining units never started
            self._mark_cancelled(name, "the run stopped before all its items or iterations ran")
        status = self._status(cancelled)
        error = self._first_error
        if self._timed_out:
            error = WorkflowTimeoutError(
                f"workflow {self.workflow!r} run {self.run_id} timed out after "
                f"{self._timeout}s; raise workflow(timeout=...) or speed up its tasks",
                workflow=self.workflow,
                run_id=self.run_id,
                task=None,
                status=status.value,
            )
        duration = time.perf_counter() - t0
        with paused_gc():  # a record per task, none in a cycle: see _private/gcpause.py
            metrics = RunMetrics.from_tasks(
                self.tasks.values(), duration,
                None if self._admission is None else self._admission.peak,
            )
            succeeded = [n for n, r in self.tasks.items() if r.state is TaskState.SUCCEEDED]
        if session is not None:
            error = self._finish_session(session, status, metrics, error)
            if isinstance(error, StateError):
                status = RunStatus.FAILED
        self._publish(
            WorkflowFinished,
            status=status.value,
            duration=duration,
            succeeded=metrics.succeeded,
            failed=metrics.failed,
            skipped=metrics.skipped,
            error=error,
        )
        return RunResult(
            workflow=self.workflow,
            run_id=self.run_id,
            status=status,
            results=Results(
                self.results, succeeded, None if session is None else session.load
            ),
            tasks=self.tasks,
            metrics=metrics,
            started=started,
            finished=started + duration,
            error=error,
            resumed=session is not None and session.resumed,
        )

    def _loop(self) -> None:
        ready = self._ready
        while True:
            if ready and not self._stopping:
                self._start_ready()
            if self._running:
                self._wait()
            elif (self._delayed or self._token_due is not None) and not self._stopping:
                self._sleep_until_due()
            elif not (ready and not self._stopping):
                return
            elif self._admission is not None:
                self._stuck()

    def _start_ready(self) -> None:
        if self._admission is not None:
            self._start_ready_admitted()
            return
        ready = self._ready
        inflight = self._inflight
        task_executors = self._task_executors
        default = self._executor
        while ready and not self._stopping:
            entry = ready[0]
            name = entry if entry.__class__ is str else entry[0]
            ex = task_executors.get(name, default)
            if inflight.get(ex, 0) >= ex.max_workers and not (ex.batching and self._room(ex, name)):
                if not task_executors:
                    return
                pick = next(
                    (
                        i
                        for i, e in enumerate(ready)
                        if self._room(task_executors.get(_name_of(e), default), _name_of(e))
                    ),
                    None,
                )
                if pick is None:
                    return
                entry = ready[pick]
                name = _name_of(entry)
                del ready[pick]
                ex = task_executors.get(name, default)
            else:
                ready.popleft()
            if isinstance(entry, tuple):
                self._start_unit(name, entry[1], ex)
            elif name in self._gate.check and not self._admit(name):
                continue
            elif name in self._fanned:
                self._expand(name)
            else:
                self._start(name, ex)

    # -- starting and finishing attempts ---------------------------------------------

    def _start(self, name: str, ex: Executor) -> None:
        rec = self.tasks[name]
        b = self._bindings[name]
        if rec.state is not TaskState.PENDING:  # PENDING -> RUNNING is always allowed
            check_transition(name, rec.state, TaskState.RUNNING)
        rec.state = TaskState.RUNNING
        rec.attempts += 1
        attempt = rec.attempts
        if rec.started is None:
            rec.started = time.time()
        try:
            kwargs = self._arguments(name, b, attempt) if b.args or b.extra_inputs else {}
        except StateError as exc:  # a restored input could not be loaded back
            self._failed(name, exc, 0.0)
            return
        if self._consumers_left is not None and attempt == 1:
            self._release_inputs(name)
        if self._emit_started:
            self._publish(TaskStarted, task=name, attempt=attempt)
        self._launch(name, -1, b, kwargs, attempt, ex)

    def _launch(
        self, name: str, index: int, b: Binding, kwargs: dict[str, Any], attempt: int,
        ex: Executor,
    ) -> None:
        """Run one attempt (of a task, or of one of its items with ``index`` >= 0): in
        this thread when that is cheaper and safe, else through its executor."""
        if self._handles and not ex.isolated:  # large results held as handles: map them
            try:
                kwargs = materialize_inputs(kwargs)
            except Exception as exc:  # a file gone, a Dask result lost: this task fails
                if index < 0:
                    self._failed(name, exc, 0.0)
                else:
                    self._unit_failed(name, index, exc, 0.0)
                return
        if b.uses_resources and not ex.isolated:  # process workers make their own
            try:
                resolve_refs(kwargs, self._pool)
            except TaskError as exc:
                if index < 0:
                    self._failed(name, exc, 0.0)
                else:
                    self._unit_failed(name, index, exc, 0.0)
                return
        timeout = b.task.timeout
        if timeout is None and self._run_deadline is None and (
            ex.inline
            or (
                not self._running
                and not self._ready
                and not self._delayed
                and type(ex) is ThreadExecutor
            )
        ):
            self._inline_task = name
            t0 = time.perf_counter()
            try:
                value = b.call(**kwargs)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: as on the pool paths
                self._inline_task = None
                if index < 0:
                    self._failed(name, exc, time.perf_counter() - t0)
                else:
                    self._unit_failed(name, index, exc, time.perf_counter() - t0)
            else:
                self._inline_task = None
                if index < 0:
                    self._succeeded(name, value, time.perf_counter() - t0)
                else:
                    self._unit_succeeded(name, index, value, time.perf_counter() - t0)
            return
        t0 = time.perf_counter()
        try:
            if ex.isolated:
                gpus = self._gpus_of(name, index) if self._grants else None
                env = None if gpus is None else {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
                if ex.takes_tasks:  # it pickles attempts itself (several at once, or
                    # with their inputs left on a cluster)
                    future = ex.submit_task(  # type: ignore[attr-defined]
                        b.task, kwargs, env, self._spills.get(ex), name,
                        solo=timeout is not None or self._admission is not None,
                        ahead=self._send_ahead,
                    )
                else:
                    from ._private.remote import pack_call, run_packed

                    payload = pack_call(b.task, kwargs, env, self._spills.get(ex))
                    future = ex.submit(run_packed, payload, name)
            elif ex.inline:
                future = ex.submit_detached(b.call, **kwargs)  # type: ignore[attr-defined]
            else:
                future = ex.submit(b.call, **kwargs)
        except TaskSerializationError as exc:
            if index < 0:
                self._failed(name, exc, time.perf_counter() - t0)
            else:
                self._unit_failed(name, index, exc, time.perf_counter() - t0)
            return
        except KeyboardInterrupt:  # while it was handed over: it never started
            self._mark_cancelled(name, "interrupted (Ctrl-C)")
            raise
        self._running[future] = _Attempt(name, attempt, t0, ex, index)
        if ex.isolated and self._grants:
            self._watch_memory(name, index, future, ex)
        self._inflight[ex] = self._inflight.get(ex, 0) + 1
        if timeout is not None:
            self._seq += 1
            heapq.heappush(
                self._deadlines, (self._clock.monotonic() + timeout, self._seq, future)
            )
        future.add_done_callback(self._inbox.put)

    def _arguments(
        self,
        name: str,
        b: Binding,
        attempt: int,
        args: tuple[tuple[str, int, str], ...] | None = None,
    ) -> dict[str, Any]:
        results = self.results
        absent = self._gate.absent  # upstreams that failed or were skipped give None
        kwargs: dict[str, Any] = {}
        for param, kind, source in b.args if args is None else args:
            if kind == FROM_TASK:
                kwargs[param] = None if absent and source in absent else results[source]
            elif kind == FROM_PARAM:
                kwargs[param] = self._params[source]
            elif kind == FROM_RESOURCE:
                kwargs[param] = self._resources[source]
            else:
                kwargs[param] = TaskContext(
                    run_id=self.run_id,
                    workflow=self.workflow,
                    task=name,
                    attempt=attempt,
                    params=self._params,
                    inputs={
                        u: None if u in absent else results[u] for u in self._graph.upstream[name]
                    },
                    log_file=self._log_file,
                    log_console=self._log_console,
                    resumed=self._session is not None and self._session.resumed,
                    gpus=self._gpus_of(name, -1),
                )
        if args is None:
            for up in b.extra_inputs:
                kwargs[up] = None if absent and up in absent else results[up]
        return kwargs

    def _collect(self, future: Future[Any]) -> None:
        attempt = self._running.pop(future, None)
        if attempt is None:
            return  # timed out or cancelled earlier; its late answer is ignored
        self._inflight[attempt.executor] -= 1
        if self._stopping and attempt.executor.batching:  # what a batch handed back
            self._drop_queued("the run stopped")
        duration = getattr(future, "ran_for", None)  # as measured by a batching worker
        if duration is None:
            duration = time.perf_counter() - attempt.started
        name = attempt.name
        over = None if self._memory is None else self._memory.exceeded.pop(future, None)
        if over is not None:
            from ._memory import margin

            limit, peak = over
            self._attempt_failed(attempt, MemoryLimitExceeded(
                f"task {name!r} attempt {attempt.number} used {peak / 2**20:.0f} MiB, over its "
                f"memory={limit / 2**20:.0f} MiB (+{margin(limit) / 2**20:.0f} MiB margin); "
                "its worker was killed. Raise Resources(memory=...) or use less",
                task=name, limit=limit, peak=peak,
            ), duration)
            return
        try:
            value = future.result()
            if attempt.executor.isolated:
                from ._private.remote import unpack_outcome

                value = unpack_outcome(value, name)
        except WorkerCrashedError as exc:
            self._attempt_failed(
                attempt,
                WorkerCrashedError(
                    f"task {name!r} attempt {attempt.number} failed: {exc.message}; the run "
                    "goes on with a fresh worker",
                    task=name,
                    exitcode=getattr(exc, "exitcode", None),
                    signal=getattr(exc, "signal", None),
                ),
                duration,
            )
        except BaseException as exc:  # the task's own error, whatever its class
            self._attempt_failed(attempt, exc, duration)
        else:
            if attempt.index < 0:
                self._succeeded(name, value, duration)
            else:
                self._unit_succeeded(name, attempt.index, value, duration)

    def _attempt_failed(self, attempt: _Attempt, error: BaseException, duration: float) -> None:
        if attempt.index < 0:
            self._failed(attempt.name, error, duration)
        else:
            self._unit_failed(attempt.name, attempt.index, error, duration)

    def _succeeded(self, name: str, value: Any, duration: float) -> None:
        if self._grants:
            self._release(name, -1)
        if name in self._branches:  # a set lookup: this runs for every success
            try:
                self._gate.chose(name, materialize(value))
            except Exception as exc:  # not a branch's answer, or a held value lost
                self._failed(name, exc, duration, retry=False)
                return
        rec = self.tasks[name]
        rec.state = TaskState.SUCCEEDED
        rec.duration = duration
        rec.finished = time.time()
        self.results[name] = value
        if self._session is not None:
            self._save_success(rec, value)
        if self._emit_succeeded:
            self._publish(TaskSucceeded, task=name, attempt=rec.attempts, duration=duration)
        rs = self._ready_set
        rs.done(name)
        self._ready.extend(rs.get_ready())

    def _failed(
        self, name: str, error: BaseException, duration: float, *, retry: bool = True
    ) -> None:
        if self._grants:
            self._release(name, -1)
        rec = self.tasks[name]
        task = self._bindings[name].task
        will_retry = (
            retry
            and rec.attempts <= task.retries
            and isinstance(error, task.retry_on)
            and not isinstance(error, TaskSerializationError)
            and not self._stopping
        )
        rec.duration = duration
        event = None
        if self._emit_failed or (task.on_failure is not None and not will_retry):
            event = self._publish(
                TaskFailed,
                task=name,
                attempt=rec.attempts,
                duration=duration,
                error=error,
                will_retry=will_retry,
            )
        if will_retry:
            check_transition(name, rec.state, TaskState.PENDING)
            rec.state = TaskState.PENDING
            delay = task.retry_delay_for(rec.attempts + 1)
            self._seq += 1
            heapq.heappush(self._delayed, (self._clock.monotonic() + delay, self._seq, name))
            self._publish(TaskRetrying, task=name, attempt=rec.attempts + 1, delay=delay)
            return
        rec.state = TaskState.FAILED
        rec.error = error
        rec.finished = time.time()
        rec.tolerated = task.on_error == "continue"
        self._save_end(rec)
        if task.on_failure is not None:
            call_hook(task.on_failure, event, f"on_failure of task {name!r}")
        if not rec.tolerated and self._first_error is None:
            self._first_error = error
        if (task.on_error or ("fail_fast" if self._fail_fast else "continue")) == "fail_fast":
            self._stopping = True
            self._drop_queued(f"task {name!r} failed (fail_fast)")
            return
        self._gate.ended_without_result(name)
        rs = self._ready_set
        rs.done(name)
        self._ready.extend(rs.get_ready())

    # -- stopping --------------------------------------------------------------------

    def _cancel_all(self, reason: str) -> None:
        self._stopping = True
        self._delayed.clear()
        self._drop_queued(reason)  # first: a worker stopped below must not pick them up
        for future, attempt in list(self._running.items()):
            attempt.executor.cancel_running(future)
            self._release(attempt.name, attempt.index)
            self._mark_cancelled(attempt.name, reason)
        self._running.clear()
        if self._inline_task is not None:
            self._mark_cancelled(self._inline_task, reason)
            self._inline_task = None

    def _mark_cancelled(self, name: str, reason: str) -> None:
        rec = self.tasks[name]
        if rec.state is TaskState.RUNNING:
            rec.state = TaskState.CANCELLED
            rec.finished = time.time()
            self._save_end(rec)
            self._publish(TaskCancelled, task=name, attempt=rec.attempts, reason=reason)

    def _shutdown_executors(self) -> None:
        """Stop every worker of the run (stopped attempts were killed or abandoned)."""
        for ex in {self._executor, *self._task_executors.values()}:
            try:
                ex.shutdown(wait=True)
            except Exception:  # pragma: no cover - never let cleanup hide the result
                pass

    def _status(self, cancelled: bool) -> RunStatus:
        if cancelled:
            return RunStatus.CANCELLED
        if self._timed_out or isinstance(self._first_error, StateError):
            return RunStatus.FAILED
        for rec in self.tasks.values():
            state = rec.state
            if state is TaskState.SUCCEEDED or state is TaskState.SKIPPED:
                continue
            if state is TaskState.FAILED and rec.tolerated:
                continue
            return RunStatus.FAILED
        return RunStatus.SUCCEEDED

    def _publish(self, event_type: type[Any], **fields: Any) -> Any:
        event = event_type(
            workflow=self.workflow, run_id=self.run_id, timestamp=time.time(), **fields
        )
        self._bus.publish(event)
        return event


def _name_of(entry: str | tuple[str, int]) -> str:
    return entry if isinstance(entry, str) else entry[0]

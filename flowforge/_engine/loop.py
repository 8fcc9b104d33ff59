"""The one scheduling loop every executor shares (the parts it composes: see the
package docstring).

States. A task's state changes only through :func:`~.lifecycle.move`: PENDING ->
RUNNING -> SUCCEEDED | FAILED; RUNNING -> PENDING while a retry waits out its delay;
PENDING -> SKIPPED (trigger, branch or condition); PENDING -> FAILED when it fails
before it can start; RUNNING -> CANCELLED when the run is cancelled or times out, or
when an attempt an executor still held in its queue is dropped as the run stops. What
was never handed to an executor stays PENDING, for a resume. A mapped or looping task
stays RUNNING while its *units* ``(task, index)`` run.

Data. ``ready`` is a FIFO deque of entries, a task's name or a unit; the ``ReadySet``
(:mod:`flowforge.dag`) puts a task there when its last upstream is done. Running
attempts live in the :class:`~.dispatch.Dispatcher`, whose inbox the loop blocks on,
with a timeout at the next thing :class:`~.timers.Timers` has due: the loop wakes for a
finished attempt, a deadline, a retry or a cancel, and never polls.

Selection policy. Ready entries start in the order they became ready while their
executor has room and admission grants them; one that must wait keeps its place and
those behind it may pass (admission's fairness reservation stops starvation). There
are no level barriers: a task starts as soon as its own upstreams are done. A gated
task asks the :class:`~.gate.Gate` first; a mapped or looping task opens its units
through :class:`~.fanout.FanOut` instead of starting.

Outcomes. The :class:`~.ledger.Ledger` ends tasks: it saves a success through the
:class:`~.recorder.Recorder` *before* its event is published, so a task reported
finished is on disk, and queues what that made ready. Tasks and units share one retry
path (:meth:`Engine._attempt_failed`): retried while attempts remain, the error matches
``retry_on`` and the run is not stopping, after ``retry_delay * backoff**(k-1)``. A
final failure under ``fail_fast`` stops the run through the :class:`~.cancel.CancelToken`
(running attempts finish, queued ones are CANCELLED, the rest stay PENDING); under
``continue`` its downstream tasks ask the gate (a skip spreads under the default
trigger) and the rest goes on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .._binding import Binding
from ..errors import StateError, TaskExitError, TaskSerializationError
from ..events import (
    TaskFailed,
    TaskRetrying,
    TaskStarted,
    TaskSucceeded,
    TaskWaiting,
    WorkflowStarted,
)
from ..result import RunResult
from ..states import TaskState
from .admission import NullAdmission, RunAdmission, Wait
from .arguments import Arguments
from .cancel import SIGNAL_MAIN, CancelToken, Stop, interrupter_for
from .dispatch import Attempt, Dispatcher, Outcome, timeout_error
from .fanout import FanOut, Step
from .gate import Fail, Gate
from .ledger import Ledger
from .lifecycle import move, new_records
from .recorder import Recorder
from .report import started_fields, summarize
from .results import ResultStore
from .timers import Timers

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..executors.base import Executor
    from .spec import RunSpec

__all__ = ["Engine"]

_RUNNING = TaskState.RUNNING
_PENDING = TaskState.PENDING


class Engine:
    """Runs one workflow run to completion; use once."""

    def __init__(self, spec: RunSpec) -> None:
        graph, bindings, session = spec.graph, spec.bindings, spec.session
        self.workflow = spec.workflow
        self.run_id = spec.run_id
        self._graph = graph
        self._bindings = bindings
        self._params = spec.params
        self._on_error = spec.on_error
        self._timeout = spec.timeout
        self._session = session
        self.tasks = new_records(graph.order)
        self._store = ResultStore(None if session is None else session.load)
        self.results = self._store.values
        self._ready_set = graph.ready_set()
        self._ready: deque[Any] = deque()
        self._gate = Gate(graph, bindings, self.tasks)
        self._gate_passed: set[str] = set()  # asked already, then made to wait
        self._admission: RunAdmission | NullAdmission = (
            NullAdmission() if spec.admission is None
            else RunAdmission(spec.admission, spec.requests, self.tasks)
        )
        self._limited = spec.admission is not None  # admission may make an attempt wait
        self._timers = Timers(spec.clock, spec.timeout)
        self._recorder = Recorder(session, graph, self.results, self._state_failed)
        self._fanout = FanOut(bindings, self._recorder, spec.params, ResultStore.value)
        self._fanned = {n for n, b in bindings.items() if b.task.map or b.task.loop}
        self._branches = {n for n, b in bindings.items() if b.task.branch}
        self._dispatch = Dispatcher(
            spec.executor, spec.task_executors, self._store, self._admission,
            self._ready, self._timers,
            limited=spec.admission is not None, inline=spec.timeout is None,
            send_ahead=spec.session is None and spec.admission is None,
        )
        self.token = CancelToken(wake=lambda: self._dispatch.inbox.put(None))
        self._arguments = Arguments.for_run(spec, self.results, self._gate.absent,
                                            self._recorder.resumed, self._admission.gpus_of)
        self._restored = self._recorder.restore(self.tasks, self._ready_set, self._gate,
                                                bindings)
        self._ledger = Ledger(spec, self.tasks, self.results, self._ready, self._ready_set,
                              self._gate, self._recorder, self._fanout)
        self._publish = self._ledger.publish
        self._first_error: BaseException | None = None
        self._running_stopped = False
        self._interrupt = interrupter_for(None)  # how cancel() stops an attempt run here
        self._interrupted = False  # cancel() asked that of the loop's thread
        self._started = time.time()

    # -- the run ---------------------------------------------------------------------

    def run(self, *, executor_label: str = "") -> RunResult:
        """Run every task that is not restored; return the run's result."""
        started = self._started = time.time()
        t0 = time.perf_counter()
        # cancel() stops an attempt running in this thread as Ctrl-C would: by SIGINT in
        # a main thread whose handler raises KeyboardInterrupt (it also cuts a sleep
        # short). Elsewhere (a scheduler's thread, SIGINT ignored) it can only raise
        # KeyboardInterrupt at the thread's next Python line, so only attempts measured
        # to be quick run here; the others go where a cancel can abandon them.
        self._interrupt = interrupter_for(threading.current_thread())
        if self._session is not None and self._interrupt is not SIGNAL_MAIN:
            self._dispatch.inline_alone = False
            self._dispatch.quick_only = True
        self._publish(
            WorkflowStarted, total_tasks=len(self.tasks),
            executor=executor_label or getattr(self._dispatch.default, "name", "custom"),
            params=dict(self._params),
            **started_fields(self._session, self._recorder.resumed, self._restored),
        )
        try:
            self._store.plan(self._dispatch.isolated(), self._session, self.run_id)
            self._ready.extend(self._ready_set.get_ready())
            self._loop()
        except KeyboardInterrupt:
            self._cancel(Stop.CANCEL, "interrupted (Ctrl-C)")
        finally:
            if self._interrupted:  # one sent as the attempt ended must not land later
                self._interrupt.withdraw()
            self._store.hold()  # before the executors stop: a cluster's results go too
            self._dispatch.shutdown()
            self._store.remove_files()
        self._ledger.cancel_leftovers(self.token.reason or "the run stopped")
        return summarize(
            workflow=self.workflow, run_id=self.run_id, tasks=self.tasks, values=self.results,
            token=self.token, first_error=self._first_error, timeout=self._timeout,
            peak=self._admission.peak, recorder=self._recorder, session=self._session,
            started=started, duration=time.perf_counter() - t0, publish=self._publish,
        )

    def _loop(self) -> None:
        ready = self._ready
        token = self.token
        dispatch = self._dispatch
        while True:
            if ready and not token.stopping:
                self._start_ready()
            if dispatch.running:
                self._wait()
            elif token.stopping:
                return
            elif self._timers.has_due():
                self._sleep_until_due()
            elif ready:
                self._stuck()
            else:
                return

    def _start_ready(self) -> None:
        """Start every ready entry its executor has room for and admission grants, in
        order; the others keep their place at the front of the queue."""
        ready = self._ready
        dispatch = self._dispatch
        admission = self._admission
        gate_check = self._gate.check
        inflight = dispatch.inflight
        limited = self._limited
        several = bool(dispatch.by_task)
        kept: list[Any] = []
        token = self.token
        while ready and not token.stopping:
            entry = ready.popleft()
            name, index = (entry, -1) if entry.__class__ is str else entry
            ex = dispatch.by_task.get(name, dispatch.default) if several else dispatch.default
            if inflight.get(ex, 0) >= ex.max_workers and not dispatch.queues(
                ex, name, self._bindings[name].task.timeout is not None
            ):
                kept.append(entry)
                if several or limited:
                    continue  # another entry may fit elsewhere
                break
            if (index < 0 and name in gate_check and name not in self._gate_passed
                    and not self._ask_gate(name)):
                continue
            if index < 0 and name in self._fanned:
                self._open_fan(name)
                continue
            if index >= 0 and not self._unit_may_start(name):
                continue  # its task failed meanwhile: the rest of its units never start
            if limited:
                grant = admission.admit(name, index)
                if grant.__class__ is Wait:
                    kept.append(entry)
                    self._waits(name, index, grant)
                    continue
            if index < 0:
                self._start(name, ex)
            else:
                self._start_unit(name, index, ex)
        if kept:
            ready.extendleft(reversed(kept))
        if limited:
            self._timers.token_in(admission.token_delay())

    def _ask_gate(self, name: str) -> bool:
        """Ask the gate about a ready task: True if it runs; else it was skipped or failed."""
        b = self._bindings[name]
        decision = self._gate.decide(
            name,
            lambda: self._store.local_inputs(
                self._arguments.build(name, b, 1, b.when_args)
            ),
        )
        if decision is None:
            self._gate_passed.add(name)
            return True
        if isinstance(decision, Fail):
            self._task_failed(name, decision.error, 0.0)
        else:
            self._ledger.skipped(name, decision.reason)
        return False

    def _waits(self, name: str, index: int, wait: Wait) -> None:
        if wait.first:
            attempt = (self.tasks[name].attempts if index < 0
                       else self._fanout.attempts_of(name, index)) + 1
            self._publish(TaskWaiting, task=name, attempt=attempt,
                          index=None if index < 0 else index, reason=wait.reason)

    # -- starting attempts -----------------------------------------------------------

    def _start(self, name: str, ex: Executor) -> None:
        rec = self.tasks[name]
        b = self._bindings[name]
        move(rec, _RUNNING)
        attempt = rec.attempts
        try:
            kwargs = self._arguments.build(name, b, attempt) if b.args or b.extra_inputs else {}
        except StateError as exc:  # a restored input could not be loaded back
            self._attempt_failed(Attempt(name, attempt, ex), exc, 0.0)
            return
        if attempt == 1 and self._recorder.session is not None:
            self._recorder.inputs_taken(name)
        if self._ledger.emit_started:
            self._publish(TaskStarted, task=name, attempt=attempt)
        launched = self._dispatch.launch(name, attempt, -1, ex, b, kwargs)
        if launched.__class__ is tuple and launched[0]:  # it ran here: the common case
            self._succeeded(name, launched[1], launched[2])
        else:
            self._launched(name, attempt, -1, ex, b, launched)

    def _unit_may_start(self, name: str) -> bool:
        return self.tasks[name].state is _RUNNING and self._fanout.runs(name)

    def _start_unit(self, name: str, index: int, ex: Executor) -> None:
        number, kwargs = self._fanout.unit_arguments(
            name, index, self._admission.gpus_of(name, index)
        )
        self._publish(TaskStarted, task=name, attempt=number, index=index)
        b = self._bindings[name]
        self._launched(name, number, index, ex, b,
                       self._dispatch.launch(name, number, index, ex, b, kwargs))

    def _launched(
        self, name: str, number: int, index: int, ex: Executor, b: Binding,
        launched: Outcome | Attempt,
    ) -> None:
        """Act on what the dispatcher did with an attempt: its outcome if it ran here,
        else its deadline if it has a timeout."""
        if launched.__class__ is not tuple:  # handed over: its future will tell
            if b.task.timeout is not None:
                assert isinstance(launched, Attempt) and launched.future is not None
                self._timers.deadline(launched.future, b.task.timeout)
            return
        self._finished(Attempt(name, number, ex, index), launched)

    def _open_fan(self, name: str) -> None:
        """A mapped or looping task is ready: compute its inputs, queue its first units."""
        rec = self.tasks[name]
        b = self._bindings[name]
        move(rec, _RUNNING)
        try:
            base = self._arguments.build(name, b, 1)
        except StateError as exc:
            self._task_failed(name, exc, 0.0)
            return
        self._recorder.inputs_taken(name)
        self._publish(TaskStarted, task=name, attempt=1)
        upstream = {u: self.tasks[u] for u in self._graph.upstream[name]}
        self._fan_step(name, self._fanout.open(name, base, upstream))

    def _fan_step(self, name: str, step: Step | None) -> None:
        if step is None:
            return
        if step.units:
            self._ready.extend((name, i) for i in step.units)
        elif step.done:
            self._succeeded(name, step.value, self._fanout.elapsed(name))
        elif step.error is not None:
            self._task_failed(name, step.error, self._fanout.elapsed(name))

    # -- outcomes --------------------------------------------------------------------

    def _wait(self) -> None:
        timers = self._timers
        clock = timers.clock
        due = timers.next_due(not self.token.stopping)
        timeout = None if due is None else max(0.0, due - clock.monotonic())
        dispatch = self._dispatch
        for future in dispatch.wait(timeout if timeout == 0.0 else
                                    clock.blocking_timeout(timeout)):
            attempt = dispatch.take(future)
            if attempt is not None:
                assert future is not None
                self._finished(attempt, dispatch.outcome(attempt, future))
        if self.token.stopping:
            self._on_stop()
        if due is not None:
            self._on_clock(clock.monotonic())

    def _sleep_until_due(self) -> None:
        clock = self._timers.clock
        due = self._timers.next_due(True)
        assert due is not None
        delay = due - clock.monotonic()
        if clock.blocking_timeout(delay) == delay:  # real time: wait where cancel() wakes
            self._dispatch.wait(max(delay, 0.0))
            if self.token.stopping:
                self._on_stop()
                return
        else:  # a test's clock: its sleep moves it on
            clock.sleep(delay)
        self._on_clock(clock.monotonic())

    def _on_clock(self, now: float) -> None:
        """Expire attempt timeouts, release retries that are due, enforce the run's timeout."""
        timers = self._timers
        for future in timers.expired(now):
            self._timed_out(future)
        if not self.token.stopping:
            self._ready.extend(timers.due(now))
        if timers.run_expired(now):
            self._cancel(Stop.TIMEOUT, f"the workflow timeout of {self._timeout}s passed")

    def _timed_out(self, future: Future[Any]) -> None:
        attempt = self._dispatch.take(future)
        if attempt is None:
            return  # it ended, or was stopped, before its deadline came round
        killed = attempt.executor.cancel_running(future)
        error = timeout_error(attempt, self._bindings[attempt.name].task.timeout, killed)
        self._attempt_failed(attempt, error, time.perf_counter() - attempt.started)

    def _finished(self, attempt: Attempt, outcome: Outcome) -> None:
        ok, value, duration = outcome
        if ok:
            if attempt.index < 0:
                self._succeeded(attempt.name, value, duration)
            else:
                self._unit_succeeded(attempt, value, duration)
        else:
            self._attempt_failed(attempt, value, duration)

    def _succeeded(self, name: str, value: Any, duration: float) -> None:
        if self._limited:
            self._admission.release(name, -1)
        if name in self._branches:  # a set lookup: this runs for every success
            try:
                self._gate.chose(name, ResultStore.value(value))
            except Exception as exc:  # not a branch's answer, or a held value lost
                self._task_failed(name, exc, duration)
                return
        self._ledger.succeeded(name, value, duration)

    def _unit_succeeded(self, attempt: Attempt, value: Any, duration: float) -> None:
        name, index = attempt.name, attempt.index
        self._admission.release(name, index)
        step = self._fanout.succeeded(name, index, value, duration)
        if step is None or self.tasks[name].state is not _RUNNING:
            return  # a late item of a task that already ended: kept for a resume
        self._publish(TaskSucceeded, task=name, attempt=attempt.number, duration=duration,
                      index=index)
        self._fan_step(name, step)

    def _attempt_failed(self, attempt: Attempt, error: BaseException, duration: float) -> None:
        """The one retry path, for tasks and units alike."""
        name, index = attempt.name, attempt.index
        self._admission.release(name, index)
        rec = self.tasks[name]
        task = self._bindings[name].task
        number = attempt.number
        unit = index >= 0
        will_retry = (
            number <= task.retries
            and isinstance(error.__cause__ if isinstance(error, TaskExitError) else error,
                           task.retry_on)
            and not isinstance(error, TaskSerializationError)
            and not self.token.stopping
            and (not unit or (self._fanout.runs(name) and rec.state is _RUNNING))
        )
        event = None
        if self._ledger.emit_failed or unit or (task.on_failure is not None and not will_retry):
            event = self._publish(
                TaskFailed, task=name, attempt=number, duration=duration, error=error,
                will_retry=will_retry, index=None if not unit else index,
            )
        if will_retry:
            entry: Any = name
            if unit:
                entry = (name, index)
            else:
                rec.duration = duration
                move(rec, _PENDING)
            delay = task.retry_delay_for(number + 1)
            self._timers.delay(entry, delay)
            self._publish(TaskRetrying, task=name, attempt=number + 1, delay=delay,
                          index=index if unit else None)
            return
        if not unit:
            self._task_failed(name, error, duration, event)
        elif rec.state is _RUNNING:
            elapsed = self._fanout.failed(name, index, error)
            if elapsed is not None:
                self._task_failed(name, error, elapsed)

    def _task_failed(
        self, name: str, error: BaseException, duration: float, event: Any = None
    ) -> None:
        """``name`` failed for good: record it, then stop the run or route around it."""
        self._admission.release(name, -1)
        tolerated = self._ledger.failed(name, error, duration, event)
        if not tolerated and self._first_error is None:
            self._first_error = error
        if (self._bindings[name].task.on_error or self._on_error) == "fail_fast":
            self._cancel(Stop.FAIL_FAST, f"task {name!r} failed (fail_fast)")
            return
        self._ledger.ended_without_result(name)

    def _stuck(self) -> None:
        """Nothing runs and nothing ready may start (a GPU whose memory other programs
        hold, say): fail the waiting tasks rather than wait for ever."""
        entries = list(self._ready)
        self._ready.clear()
        for entry in entries:
            name, index = (entry, -1) if isinstance(entry, str) else entry
            if not self.tasks[name].state.finished:
                self._task_failed(name, self._admission.stuck_error(name, index), 0.0)

    # -- stopping --------------------------------------------------------------------

    def cancel(self, reason: str, *, force: bool = False) -> None:
        """Stop the run from any thread, as Ctrl-C does; ``reason`` (who asked) is what
        the run and its cancelled tasks are told. ``force``: also end the child processes
        of the running attempts."""
        dispatch = self._dispatch
        dispatch.force = dispatch.force or force
        if self.token.cancel(Stop.CANCEL, reason) and dispatch.current is not None:
            self._interrupted = True  # an attempt runs in the loop's thread: stop it
            self._interrupt.send()

    def _cancel(self, cause: Stop, reason: str) -> None:
        """Stop the run through its token, and act on it at once in this thread."""
        self.token.cancel(cause, reason)
        self._on_stop()

    def _on_stop(self) -> None:
        """The token says stop: forget waiting retries, drop what batching executors still
        queue and, when running attempts must stop too, stop them."""
        token = self.token
        self._timers.drop_delayed()
        for attempt in self._dispatch.drop_queued():
            if attempt.index < 0:
                self._ledger.cancelled(attempt.name, f"it had not started when {token.reason}")
        if token.stop_running and not self._running_stopped:
            self._running_stopped = True
            dispatch = self._dispatch
            dispatch.end_children(self._started)
            for future, attempt in list(dispatch.running.items()):
                dispatch.stop(future)
                dispatch.take(future)
                self._admission.release(attempt.name, attempt.index)
                self._ledger.cancelled(attempt.name, token.reason)
            current = dispatch.current
            if current is not None:
                dispatch.current = None
                self._ledger.cancelled(current, token.reason)

    def _state_failed(self, error: StateError) -> None:
        """Saving failed: stop starting tasks; the save error is the run's error."""
        if self._first_error is None or not isinstance(self._first_error, StateError):
            self._first_error = error
        self.token.cancel(Stop.STATE, "saving the run's state failed")


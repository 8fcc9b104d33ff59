"""Tasks that run as many attempts: ``map=`` over the items of an upstream result, and
``loop=`` until a condition on the result holds.

A mixin of the engine. When a mapped or looping task is ready, :meth:`Fanning._expand`
computes its inputs once and puts *units* on the ready queue: ``(task, index)`` for each
item (all at once: they run in parallel) or for the next iteration (one at a time).
Units go through the same loop, executors, retries and timeouts as tasks; each unit's
result is saved as soon as it is there (``RunSession.unit_succeeded``), so a resumed run
starts only the items, or the iterations, that had not finished. Saved units are reused
only when every upstream of the task was restored, not run again: then the items are the
same ones.

A mapped task's result is the list of its items' results, in input order; an empty
input gives ``[]``. A looping task's result is its last iteration's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._private.handoff import materialize
from .errors import StateError, TaskError, TaskSerializationError
from .events import TaskFailed, TaskRetrying, TaskStarted, TaskSucceeded
from .states import TaskState
from .task import TaskContext

if TYPE_CHECKING:
    from collections import deque

    from ._binding import Binding
    from .dag import CompiledDAG
    from .executors.base import Executor
    from .persistence.session import RunSession
    from .result import TaskRun

__all__ = ["Fanning"]

_SAVED = object()  # an item whose result waits in the state folder
_PENDING = object()  # an item not finished yet


class Fan:
    """One mapped or looping task in progress."""

    __slots__ = ("base", "items", "values", "attempts", "left", "failed", "t0", "previous",
                 "saved", "inputs")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.items: list[tuple[Any, ...]] = []
        self.values: list[Any] = []
        self.attempts: dict[int, int] = {}
        self.left = 0
        self.failed = False
        self.t0 = time.perf_counter()
        self.previous: Any = None
        self.saved: dict[int, Any] = {}
        self.inputs = ""


class Fanning:
    """Map and loop handling (mixed into :class:`~flowforge._engine.Engine`)."""

    tasks: dict[str, TaskRun]
    results: dict[str, Any]
    _graph: CompiledDAG
    _bindings: Mapping[str, Binding]
    _session: RunSession | None
    _ready: deque[Any]
    _delayed: list[Any]
    _stopping: bool
    _consumers_left: dict[str, int] | None
    _fans: dict[str, Fan]
    _seq: int
    _clock: Any
    _params: Mapping[str, Any]

    if TYPE_CHECKING:  # provided by the engine and the Recording mixin

        def _arguments(self, name: str, b: Binding, attempt: int) -> dict[str, Any]: ...
        def _release_inputs(self, name: str) -> None: ...
        def _launch(self, name: str, index: int, b: Binding, kwargs: dict[str, Any],
                    attempt: int, ex: Executor) -> None: ...
        def _succeeded(self, name: str, value: Any, duration: float) -> None: ...
        def _failed(self, name: str, error: BaseException, duration: float, *,
                    retry: bool = True) -> None: ...
        def _publish(self, event_type: type[Any], **fields: Any) -> Any: ...
        def _state_failed(self, error: StateError) -> None: ...
        def _release(self, name: str, index: int) -> None: ...
        def _gpus_of(self, name: str, index: int) -> list[int] | None: ...

    def _expand(self, name: str) -> None:
        """A mapped or looping task is ready: compute its inputs, queue its first units."""
        rec = self.tasks[name]
        b = self._bindings[name]
        task = b.task
        rec.state = TaskState.RUNNING
        rec.attempts = 1
        if rec.started is None:
            rec.started = time.time()
        try:
            base = self._arguments(name, b, 1)
        except StateError as exc:
            self._failed(name, exc, 0.0, retry=False)
            return
        if self._consumers_left is not None:
            self._release_inputs(name)
        self._publish(TaskStarted, task=name, attempt=1)
        fan = self._fans[name] = Fan(base)
        # Which upstream results these units come from: a unit saved from other ones (an
        # upstream ran again since) is never reused.
        fan.inputs = hashlib.blake2b(
            repr([(u, self.tasks[u].finished) for u in self._graph.upstream[name]]).encode(),
            digest_size=8,
        ).hexdigest()
        session = self._session
        if session is not None:
            fan.saved = session.saved_units(name, fan.inputs)
        if task.map:
            try:
                fan.items = _items(name, task.map, base)
            except TaskError as exc:
                self._failed(name, exc, 0.0, retry=False)
                return
            n = len(fan.items)
            fan.values = [_SAVED if i in fan.saved else _PENDING for i in range(n)]
            fan.left = sum(1 for v in fan.values if v is _PENDING)
            if fan.left == 0:
                self._map_done(name, fan)
                return
            self._ready.extend((name, i) for i in range(n) if fan.values[i] is _PENDING)
            return
        # a loop: go on after the last iteration saved in a row from 0
        k = 0
        while k in fan.saved:
            k += 1
        if k:
            assert session is not None
            try:
                value = session.load_unit(name, k - 1)
            except StateError:
                pass  # start over rather than trust what cannot be read
            else:
                self._loop_next(name, fan, k - 1, value)  # finishes, or queues the next
                return
        self._ready.append((name, 0))

    def _start_unit(self, name: str, index: int, ex: Executor) -> None:
        fan = self._fans[name]
        if fan.failed or self.tasks[name].state is not TaskState.RUNNING:
            return  # its task failed meanwhile: the rest of its items never start
        b = self._bindings[name]
        attempt = fan.attempts[index] = fan.attempts.get(index, 0) + 1
        kwargs = dict(fan.base)
        task = b.task
        if task.map:
            for param, value in zip(task.map, fan.items[index], strict=True):
                kwargs[param] = value
        for param, value in kwargs.items():
            if isinstance(value, TaskContext):
                gpus = self._gpus_of(name, index)
                if task.map:
                    kwargs[param] = dataclasses.replace(
                        value, attempt=attempt, map_index=index, gpus=gpus
                    )
                else:
                    kwargs[param] = dataclasses.replace(
                        value, attempt=attempt, iteration=index, previous=fan.previous, gpus=gpus
                    )
        self._publish(TaskStarted, task=name, attempt=attempt, index=index)
        self._launch(name, index, b, kwargs, attempt, ex)

    def _unit_succeeded(self, name: str, index: int, value: Any, duration: float) -> None:
        self._release(name, index)
        fan = self._fans[name]
        attempt = fan.attempts[index]
        session = self._session
        if session is not None:
            try:
                session.unit_succeeded(
                    name, index, attempt, time.time() - duration, duration, value, fan.inputs,
                    iteration=not self._bindings[name].task.map,
                )
            except StateError as exc:
                self._state_failed(exc)
        if fan.failed or self.tasks[name].state is not TaskState.RUNNING:
            return  # a late item of a task that already failed: kept for a resume
        self._publish(TaskSucceeded, task=name, attempt=attempt, duration=duration, index=index)
        if self._bindings[name].task.map:
            fan.values[index] = value
            fan.left -= 1
            if fan.left == 0:
                self._map_done(name, fan)
        else:
            self._loop_next(name, fan, index, value)

    def _unit_failed(
        self, name: str, index: int, error: BaseException, duration: float
    ) -> None:
        self._release(name, index)
        fan = self._fans[name]
        task = self._bindings[name].task
        attempt = fan.attempts[index]
        will_retry = (
            attempt <= task.retries
            and isinstance(error, task.retry_on)
            and not isinstance(error, TaskSerializationError)
            and not self._stopping
            and not fan.failed
        )
        self._publish(TaskFailed, task=name, attempt=attempt, duration=duration, error=error,
                      will_retry=will_retry, index=index)
        if will_retry:
            delay = task.retry_delay_for(attempt + 1)
            self._seq += 1
            heapq.heappush(
                self._delayed, (self._clock.monotonic() + delay, self._seq, (name, index))
            )
            self._publish(TaskRetrying, task=name, attempt=attempt + 1, delay=delay, index=index)
            return
        if fan.failed or self.tasks[name].state is not TaskState.RUNNING:
            return
        fan.failed = True
        what = "item" if task.map else "iteration"
        if hasattr(error, "add_note"):
            error.add_note(f"(in {what} {index} of task {name!r})")
        self._failed(name, error, time.perf_counter() - fan.t0, retry=False)

    def _map_done(self, name: str, fan: Fan) -> None:
        values = fan.values
        if fan.saved:
            session = self._session
            assert session is not None
            try:
                for i, v in enumerate(values):
                    if v is _SAVED:
                        values[i] = session.load_unit(name, i)
            except StateError as exc:
                self._failed(name, exc, 0.0, retry=False)
                return
        self._succeeded(name, values, time.perf_counter() - fan.t0)

    def _loop_next(self, name: str, fan: Fan, index: int, value: Any) -> bool:
        """After iteration ``index``: finish the task (True) or queue the next iteration."""
        loop = self._bindings[name].task.loop
        assert loop is not None
        if loop.until is not None:
            try:
                scoped = getattr(loop.until, "scoped", None)  # a YAML until: expression
                done = bool(
                    scoped(materialize(value), index, self._params) if scoped is not None
                    else loop.until(materialize(value))
                )
            except Exception as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"(in the until= of task {name!r}, after iteration {index})")
                self._failed(name, exc, time.perf_counter() - fan.t0, retry=False)
                return True
            if done:
                self._succeeded(name, value, time.perf_counter() - fan.t0)
                return True
        if index + 1 >= loop.max_iterations:
            if loop.until is None or loop.on_exhausted == "succeed":
                self._succeeded(name, value, time.perf_counter() - fan.t0)
            else:
                error = TaskError(
                    f"task {name!r} ran {loop.max_iterations} iterations and its until= "
                    "condition never held; raise max_iterations, relax until=, or pass "
                    "on_exhausted='succeed' to keep the last result",
                    task=name,
                    iterations=loop.max_iterations,
                )
                self._failed(name, error, time.perf_counter() - fan.t0, retry=False)
            return True
        fan.previous = value
        self._ready.append((name, index + 1))
        return False


def _items(name: str, maps: tuple[str, ...], base: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The items a mapped task runs over: one tuple per item (several maps: lockstep)."""
    columns = []
    for upstream in maps:
        try:
            value = materialize(base.get(upstream))
        except Exception as exc:  # a held result that can no longer be read
            msg = f"task {name!r} cannot read the list it maps over ({upstream!r}): {exc}"
            raise TaskError(msg, task=name, upstream=upstream) from exc
        try:
            columns.append(list(value))
        except TypeError:
            msg = (
                f"task {name!r} maps over {upstream!r}, whose result is {value!r} "
                f"({type(value).__name__}), not a list or another iterable"
            )
            raise TaskError(msg, task=name, upstream=upstream) from None
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        sizes = ", ".join(f"{u}: {len(c)}" for u, c in zip(maps, columns, strict=True))
        msg = (
            f"task {name!r} maps over {', '.join(repr(m) for m in maps)} in lockstep, but "
            f"their lengths differ ({sizes}); make them the same length"
        )
        raise TaskError(msg, task=name)
    return list(zip(*columns, strict=True))

"""Tasks that run as many attempts: ``map=`` over the items of an upstream result, and
``loop=`` until a condition on the result holds.

When a mapped or looping task is ready, the loop computes its inputs once and asks
:meth:`FanOut.open` what to do; the answer is a :class:`Step`. Units ``(task, index)``
go on the ready queue: every item at once (they run in parallel), or the next iteration
(one at a time). Units go through the same loop, executors, retries and timeouts as
tasks; each unit's result is saved as soon as it is there, so a resumed run starts only
the items, or the iterations, that had not finished. Saved units are reused only when
every upstream of the task was restored, not run again: then the items are the same.

A mapped task's result is the list of its items' results, in input order; an empty
input gives ``[]``. A looping task's result is its last iteration's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .._task import TaskContext
from ..errors import StateError, TaskError

if TYPE_CHECKING:
    from .._binding import Binding
    from ..result import TaskRun
    from .recorder import Recorder

__all__ = ["Fan", "FanOut", "Step"]

_SAVED = object()  # an item whose result waits in the state folder
_PENDING = object()  # an item not finished yet


class Step(NamedTuple):
    """What the loop does next for a fanned task: queue ``units`` (indices), finish with
    ``value``, or fail with ``error``; all empty: nothing (units still run)."""

    units: tuple[int, ...] = ()
    done: bool = False
    value: Any = None
    error: BaseException | None = None


_NOTHING = Step()


class Fan:
    """One mapped or looping task in progress."""

    __slots__ = ("base", "items", "values", "attempts", "left", "failed", "t0", "previous",
                 "saved", "inputs", "mapped")

    def __init__(self, base: dict[str, Any], mapped: bool) -> None:
        self.base = base
        self.mapped = mapped
        self.items: list[tuple[Any, ...]] = []
        self.values: list[Any] = []
        self.attempts: dict[int, int] = {}
        self.left = 0
        self.failed = False
        self.t0 = time.perf_counter()
        self.previous: Any = None
        self.saved: dict[int, Any] = {}
        self.inputs = ""

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class FanOut:
    """The map items and loop iterations of one run's fanned tasks."""

    def __init__(
        self, bindings: Mapping[str, Binding], recorder: Recorder,
        params: Mapping[str, Any], value_of: Callable[[Any], Any],
    ) -> None:
        self.fans: dict[str, Fan] = {}
        self._bindings = bindings
        self._recorder = recorder
        self._params = params
        self._value_of = value_of  # a held result -> its value

    def open(self, name: str, base: dict[str, Any], upstream: Mapping[str, TaskRun]) -> Step:
        """``name`` is ready with arguments ``base``: its first units, or its result."""
        task = self._bindings[name].task
        fan = self.fans[name] = Fan(base, bool(task.map))
        # Which upstream results these units come from: a unit saved from other ones (an
        # upstream ran again since) is never reused.
        fan.inputs = hashlib.blake2b(
            repr([(u, rec.finished) for u, rec in upstream.items()]).encode(),
            digest_size=8,
        ).hexdigest()
        fan.saved = self._recorder.saved_units(name, fan.inputs)
        if task.map:
            try:
                fan.items = self._items(name, task.map, base)
            except TaskError as exc:
                return Step(error=exc)
            n = len(fan.items)
            fan.values = [_SAVED if i in fan.saved else _PENDING for i in range(n)]
            fan.left = sum(1 for v in fan.values if v is _PENDING)
            if fan.left == 0:
                return self._map_done(name, fan)
            return Step(units=tuple(i for i in range(n) if fan.values[i] is _PENDING))
        k = 0  # a loop: go on after the last iteration saved in a row from 0
        while k in fan.saved:
            k += 1
        if k:
            try:
                value = self._recorder.load_unit(name, k - 1)
            except StateError:
                pass  # start over rather than trust what cannot be read
            else:
                return self._after_iteration(name, fan, k - 1, value)
        return Step(units=(0,))

    def runs(self, name: str) -> bool:
        """Whether ``name``'s units may still start (it has not failed)."""
        return not self.fans[name].failed

    def unit_arguments(
        self, name: str, index: int, gpus: list[int] | None
    ) -> tuple[int, dict[str, Any]]:
        """The next attempt number of unit ``index`` and its arguments."""
        fan = self.fans[name]
        task = self._bindings[name].task
        attempt = fan.attempts[index] = fan.attempts.get(index, 0) + 1
        kwargs = dict(fan.base)
        if task.map:
            for param, value in zip(task.map, fan.items[index], strict=True):
                kwargs[param] = value
        for param, value in kwargs.items():
            if isinstance(value, TaskContext):
                if task.map:
                    kwargs[param] = dataclasses.replace(
                        value, attempt=attempt, map_index=index, gpus=gpus
                    )
                else:
                    kwargs[param] = dataclasses.replace(
                        value, attempt=attempt, iteration=index, previous=fan.previous, gpus=gpus
                    )
        return attempt, kwargs

    def attempts_of(self, name: str, index: int) -> int:
        """Attempts unit ``index`` of ``name`` has made so far."""
        return self.fans[name].attempts.get(index, 0)

    def succeeded(self, name: str, index: int, value: Any, duration: float) -> Step | None:
        """Unit ``index`` returned ``value``: saved at once. None if its task already
        failed (the value is kept for a resume), else what to do next."""
        fan = self.fans[name]
        self._recorder.unit_succeeded(
            name, index, fan.attempts[index], time.time() - duration, duration, value,
            fan.inputs, iteration=not fan.mapped,
        )
        if fan.failed:
            return None
        if not fan.mapped:
            return self._after_iteration(name, fan, index, value)
        fan.values[index] = value
        fan.left -= 1
        return self._map_done(name, fan) if fan.left == 0 else _NOTHING

    def failed(self, name: str, index: int, error: BaseException) -> float | None:
        """Unit ``index`` failed for good: its task fails. Returns the task's duration so
        far, or None if the task had failed already."""
        fan = self.fans[name]
        if fan.failed:
            return None
        fan.failed = True
        if hasattr(error, "add_note"):
            error.add_note(f"(in {'item' if fan.mapped else 'iteration'} {index} of task "
                           f"{name!r})")
        return fan.elapsed()

    def elapsed(self, name: str) -> float:
        return self.fans[name].elapsed()

    # -- inside ----------------------------------------------------------------------

    def _map_done(self, name: str, fan: Fan) -> Step:
        values = fan.values
        if fan.saved:
            try:
                for i, v in enumerate(values):
                    if v is _SAVED:
                        values[i] = self._recorder.load_unit(name, i)
            except StateError as exc:
                return Step(error=exc)
        return Step(done=True, value=values)

    def _after_iteration(self, name: str, fan: Fan, index: int, value: Any) -> Step:
        """After iteration ``index``: finish the task, or queue the next iteration."""
        loop = self._bindings[name].task.loop
        assert loop is not None
        if loop.until is not None:
            try:
                scoped = getattr(loop.until, "scoped", None)  # a YAML until: expression
                done = bool(
                    scoped(self._value_of(value), index, self._params) if scoped is not None
                    else loop.until(self._value_of(value))
                )
            except Exception as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"(in the until= of task {name!r}, after iteration {index})")
                return Step(error=exc)
            if done:
                return Step(done=True, value=value)
        if index + 1 >= loop.max_iterations:
            if loop.until is None or loop.on_exhausted == "succeed":
                return Step(done=True, value=value)
            return Step(error=TaskError(
                f"task {name!r} ran {loop.max_iterations} iterations and its until= "
                "condition never held; raise max_iterations, relax until=, or pass "
                "on_exhausted='succeed' to keep the last result",
                task=name,
                iterations=loop.max_iterations,
            ))
        fan.previous = value
        return Step(units=(index + 1,))

    def _items(
        self, name: str, maps: tuple[str, ...], base: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The items a mapped task runs over: one tuple per item (several maps: lockstep)."""
        columns = []
        for upstream in maps:
            try:
                value = self._value_of(base.get(upstream))
            except Exception as exc:  # a held result that can no longer be read
                msg = f"task {name!r} cannot read the list it maps over ({upstream!r}): {exc}"
                raise TaskError(msg, task=name, upstream=upstream) from exc
            if isinstance(value, (str, bytes, bytearray)):  # iterable, but never meant
                shown = value[:40]
                msg = (
                    f"task {name!r} maps over {upstream!r}, whose result is a "
                    f"{type(value).__name__} ({shown!r}): that would map over its characters; "
                    f"did you mean a list? (return [{upstream}'s value] or split it first)"
                )
                raise TaskError(msg, task=name, upstream=upstream)
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
                f"task {name!r} maps over {', '.join(repr(m) for m in maps)} in lockstep, "
                f"but their lengths differ ({sizes}); make them the same length"
            )
            raise TaskError(msg, task=name)
        return list(zip(*columns, strict=True))

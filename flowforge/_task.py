"""Tasks: the ``@task`` decorator, the :class:`Task` object and the :class:`TaskContext`.

A :class:`Task` wraps a function and its run options (retries, timeout, executor). It stays
callable as the plain function, so ``transform([1])`` still returns ``[2]`` in a unit test.
Inside a ``with workflow(...)`` block, ``@task`` also registers the task in that workflow.

Pickling: a task defined at module level pickles *by reference* (module and qualified
name), so a process worker imports it instead of receiving its code; one defined in
``__main__``, in a function, or as a lambda pickles by value through cloudpickle.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._async import AsyncCall, is_async
from ._private.codefile import origin_of, relabel
from ._private.current import current_workflow
from .errors import WorkflowDefinitionError
from .resources import RateLimit, Resources

if TYPE_CHECKING:
    from .executors.base import Executor

__all__ = ["TRIGGERS", "Loop", "Task", "TaskContext", "branch", "task"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class TaskContext:
    """What a task sees of its run when it takes a ``ctx`` parameter.

    A mapped task's ``map_index`` says which item it has; a looping task's ``iteration``
    counts from 0 and ``previous`` holds the last iteration's result (None at first).

    ``log`` is a structlog logger bound to the workflow, run, task and attempt; its lines
    go to the run's ``workflow.log`` (also from process workers) and to the console.
    """

    run_id: str
    workflow: str
    task: str
    attempt: int
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    log_file: str | None = None
    log_console: bool = False
    map_index: int | None = None  # a mapped task: which item (0-based)
    iteration: int | None = None  # a looping task: which iteration (0-based)
    previous: Any = None  # a looping task: the last iteration's result
    resumed: bool = False  # this run resumes an earlier one
    gpus: list[int] | None = None  # GPU device indices given to this attempt, if it asked
    scheduled_for: datetime | None = None  # a scheduler's run: the fire time it runs for

    def get_input(self, name: str) -> Any:
        """The result of upstream task ``name``."""
        try:
            return self.inputs[name]
        except KeyError:
            known = ", ".join(repr(k) for k in self.inputs) or "none"
            msg = (
                f"task {self.task!r} has no input named {name!r}; its upstream tasks are "
                f"{known}. Add a parameter or depends_on=[{name!r}] to make it one"
            )
            raise KeyError(msg) from None

    @property
    def log(self) -> Any:
        """A structlog logger bound to workflow, run_id, task and attempt."""
        logger = self.__dict__.get("_log")
        if logger is None:
            from .listeners.logging import task_logger

            logger = task_logger(
                self.log_file,
                console=self.log_console,
                workflow=self.workflow,
                run_id=self.run_id,
                task=self.task,
                attempt=self.attempt,
            )
            self.__dict__["_log"] = logger
        return logger

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_log", None)
        return state


class Task:
    """One step of a workflow: a function (or an overridden :meth:`run`) plus options.

    ``retries=N`` allows N+1 attempts; attempt k+1 waits ``retry_delay * backoff**(k-1)``
    seconds, capped by ``max_delay``; ``jitter=True`` scales each delay by a random factor
    in [0.5, 1.0]. Only exceptions matching ``retry_on`` are retried.

    ``timeout`` bounds each attempt in seconds. On the process executor the worker is
    killed; a thread cannot be killed, so the sequential and thread executors *abandon*
    the attempt (it is reported as timed out, and its thread runs on in the background
    until its function returns).

    Control flow: ``when`` is a condition bound like a task (upstream results by name,
    params, ``ctx``); false skips the task (reason ``"condition false"``). ``trigger``
    says which upstream outcomes let it run: ``"all_success"`` (default), ``"all_done"``,
    ``"one_success"``, ``"one_failed"``, ``"all_failed"`` or ``"none_failed"``; an
    upstream that did not succeed hands it ``None``. ``on_error="continue"`` lets this
    task fail without failing the run, ``"fail_fast"`` makes its failure stop the run
    whatever the workflow says (None: the workflow's ``on_error``). ``on_failure`` is
    called in the driver with the :class:`~flowforge.events.TaskFailed` event of its
    final failure. ``branch=True`` (or ``@branch``) makes the result name which direct
    downstream tasks run.
    """

    def __init__(
        self,
        name: str | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        depends_on: Iterable[str | Task] = (),
        retries: int = 0,
        retry_delay: float = 0.0,
        backoff: float = 1.0,
        max_delay: float | None = None,
        jitter: bool = False,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        executor: str | Executor | None = None,
        when: Callable[..., Any] | None = None,
        trigger: str = "all_success",
        on_error: str | None = None,
        on_failure: Callable[[Any], Any] | None = None,
        branch: bool = False,
        map: str | Iterable[str] | None = None,
        loop: Loop | None = None,
        resources: Resources | None = None,
        tags: Iterable[str] = (),
        rate_limit: str | RateLimit | None = None,
    ) -> None:
        if fn is not None and not callable(fn):
            msg = (
                f"task {name!r} was given {fn!r} ({type(fn).__name__}), which is not "
                "callable; pass a function, or subclass Task and override run()"
            )
            raise WorkflowDefinitionError(msg, task=name)
        if fn is None and type(self).run is Task.run:
            msg = (
                f"task {name!r} has no function; pass one (Task(name, fn)) "
                "or subclass Task and override run(self, **inputs)"
            )
            raise WorkflowDefinitionError(msg, task=name)
        if name is None:
            name = getattr(fn, "__name__", None) or type(self).__name__
        if not isinstance(name, str) or not name:
            msg = f"a task name must be a non-empty string, got {name!r}"
            raise WorkflowDefinitionError(msg, task=name)
        self.name = name
        self.fn = fn
        self.depends_on: list[str] = []
        for dep in depends_on if not isinstance(depends_on, (str, Task)) else [depends_on]:
            self.add_dependency(dep)
        # Defaults skip the checks: building 100,000 tasks should cost little.
        self.retries = (
            0 if retries == 0 and type(retries) is int
            else _check_number(name, "retries", retries, minimum=0, integer=True)
        )
        self.retry_delay = (
            retry_delay if retry_delay == 0.0 and type(retry_delay) is float
            else _check_number(name, "retry_delay", retry_delay, minimum=0)
        )
        self.backoff = (
            backoff if backoff == 1.0 and type(backoff) is float
            else _check_number(name, "backoff", backoff, minimum=1)
        )
        self.max_delay = (
            None if max_delay is None else _check_number(name, "max_delay", max_delay, minimum=0)
        )
        self.jitter = bool(jitter)
        self.retry_on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        if self.retry_on != _RETRY_ANY and not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            msg = f"task {name!r}: retry_on must be exception classes, got {retry_on!r}"
            raise WorkflowDefinitionError(msg, task=name)
        self.timeout = (
            None if timeout is None else _check_number(name, "timeout", timeout, minimum=0)
        )
        if self.timeout == 0:
            msg = f"task {name!r}: timeout must be positive seconds or None, got 0"
            raise WorkflowDefinitionError(msg, task=name)
        self.executor = executor
        self.when = when
        self.trigger = trigger
        self.on_error = on_error
        self.on_failure = on_failure
        self.branch = bool(branch)
        self.map: tuple[str, ...] = () if map is None else _check_map(name, map)
        if resources is not None and not isinstance(resources, Resources):
            msg = f"task {name!r}: resources= takes Resources(cpus=..., memory=..., gpus=...)"
            raise WorkflowDefinitionError(msg, task=name, option="resources")
        self.resources = resources
        self.tags: tuple[str, ...] = (tags,) if isinstance(tags, str) else tuple(tags)
        self.rate_limit = (
            rate_limit if rate_limit is None or isinstance(rate_limit, RateLimit)
            else RateLimit(rate_limit)
        )
        self.loop = loop
        if loop is not None and not isinstance(loop, Loop):
            msg = f"task {name!r}: loop= takes a Loop(max_iterations=..., until=...), got {loop!r}"
            raise WorkflowDefinitionError(msg, task=name, option="loop")
        if self.map and (loop is not None or self.branch):
            what = "loop=" if loop is not None else "a branch"
            msg = f"task {name!r}: map= cannot be combined with {what}; split it into two tasks"
            raise WorkflowDefinitionError(msg, task=name, option="map")
        for upstream in self.map:
            if upstream not in self.depends_on:
                self.depends_on.append(upstream)
        if when is not None or trigger != "all_success" or on_error is not None or on_failure:
            _check_control(name, when, trigger, on_error, on_failure)
        if fn is not None:
            functools.update_wrapper(self, fn, updated=())
            code = getattr(fn, "__code__", None)
            if (code.co_flags & _CO_COROUTINE) if code is not None else is_async(fn):
                self._async = AsyncCall(fn, name, self.timeout)

    # -- behaviour -------------------------------------------------------------------

    def run(self, **inputs: Any) -> Any:
        """Do the work. The default calls the wrapped function; subclasses override it."""
        assert self.fn is not None
        return self.fn(**inputs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function (or ``run``), bypassing any workflow."""
        if self.fn is not None:
            return self.fn(*args, **kwargs)
        return self.run(*args, **kwargs)

    def add_dependency(self, upstream: str | Task) -> Task:
        """Make this task wait for ``upstream`` (a task or a task name); returns self."""
        dep = upstream.name if isinstance(upstream, Task) else upstream
        if not isinstance(dep, str):
            msg = (
                f"task {self.name!r}: a dependency must be a task or a task name, "
                f"got {upstream!r}"
            )
            raise WorkflowDefinitionError(msg, task=self.name)
        if dep not in self.depends_on:
            self.depends_on.append(dep)
        return self

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry)."""
        delay = self.retry_delay * self.backoff ** max(attempt - 2, 0)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        if self.jitter:
            delay *= random.uniform(0.5, 1.0)
        return delay

    #: An ``async def`` function's caller (see :mod:`flowforge._async`), else None.
    _async: AsyncCall | None = None

    @property
    def callable(self) -> Callable[..., Any]:
        """What the engine calls with the bound inputs: a plain callable, also for an
        ``async def`` function or ``run`` (awaited on the calling thread's loop)."""
        if self.fn is not None and type(self).run is Task.run:
            return self._async or self.fn
        run = self.run
        if type(self).run.__code__.co_flags & _CO_COROUTINE:
            return AsyncCall(run, self.name, self.timeout)
        return run

    # -- pickling --------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        module = self.__dict__.get("__module__")
        qualname = self.__dict__.get("__qualname__")
        if module and module != "__main__" and qualname and "<locals>" not in qualname:
            try:
                found = _import_task(module, qualname)
            except Exception:
                found = None
            if found is self:
                return (_import_task, (module, qualname))
        state = {k: v for k, v in self.__dict__.items() if k != "executor"}
        origin = origin_of(self.fn)
        if origin is not None:  # a worker names it in tracebacks (see _private/codefile)
            state["_origin"] = origin
        return (_rebuild_task, (type(self), state))

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"


_RETRY_ANY = (Exception,)
_CO_COROUTINE = inspect.CO_COROUTINE


def _import_task(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rebuild_task(cls: type[Task], state: dict[str, Any]) -> Task:
    origin = state.pop("_origin", None)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    if origin is not None:
        relabel(obj.fn, origin)
    obj.executor = None
    return obj


@dataclass(frozen=True)
class Loop:
    """Repeat a task: run it again while ``until(result)`` is false, at most
    ``max_iterations`` times. When the iterations run out, ``on_exhausted="fail"``
    (default) fails the task and ``"succeed"`` keeps the last result. Without ``until``
    the task runs exactly ``max_iterations`` times. Each iteration is saved, so a resumed
    run goes on from the last finished one."""

    max_iterations: int
    until: Callable[[Any], Any] | None = None
    on_exhausted: str = "fail"

    def __post_init__(self) -> None:
        n = self.max_iterations
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            msg = f"Loop(max_iterations=...) must be a whole number >= 1, got {n!r}"
            raise WorkflowDefinitionError(msg, option="max_iterations")
        if self.until is not None and not callable(self.until):
            msg = f"Loop(until=...) must be a callable taking the result, got {self.until!r}"
            raise WorkflowDefinitionError(msg, option="until")
        if self.on_exhausted not in ("fail", "succeed"):
            msg = f"Loop(on_exhausted=...) must be 'fail' or 'succeed', got {self.on_exhausted!r}"
            raise WorkflowDefinitionError(msg, option="on_exhausted")


def _check_map(name: str, spec: Any) -> tuple[str, ...]:
    names: tuple[Any, ...] | None = None
    if isinstance(spec, str):
        names = (spec,)
    elif isinstance(spec, (list, tuple)):
        names = tuple(spec)
    if not names or not all(isinstance(n, str) and n for n in names):
        msg = (
            f"task {name!r}: map= takes the name of an upstream task (or a list of names for "
            f"lockstep), got {spec!r}"
        )
        raise WorkflowDefinitionError(msg, task=name, option="map")
    return names


TRIGGERS = ("all_success", "all_done", "one_success", "one_failed", "all_failed", "none_failed")


def _check_control(
    name: str,
    when: Any,
    trigger: Any,
    on_error: Any,
    on_failure: Any,
) -> None:
    if when is not None and not callable(when):
        msg = f"task {name!r}: when= must be a callable returning true or false, got {when!r}"
        raise WorkflowDefinitionError(msg, task=name, option="when")
    if trigger not in TRIGGERS:
        msg = f"task {name!r}: trigger must be one of {', '.join(TRIGGERS)}; got {trigger!r}"
        raise WorkflowDefinitionError(msg, task=name, option="trigger")
    if on_error not in (None, "fail_fast", "continue"):
        msg = (
            f"task {name!r}: on_error must be 'continue' (its failure does not fail the "
            f"run), 'fail_fast' or None (the workflow's setting); got {on_error!r}"
        )
        raise WorkflowDefinitionError(msg, task=name, option="on_error")
    if on_failure is not None and not callable(on_failure):
        msg = f"task {name!r}: on_failure must be a callable, got {on_failure!r}"
        raise WorkflowDefinitionError(msg, task=name, option="on_failure")


def _check_number(
    task: str, option: str, value: Any, *, minimum: float, integer: bool = False
) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        msg = f"task {task!r}: {option} must be {kind} >= {minimum}, got {value!r}"
        raise WorkflowDefinitionError(msg, task=task, option=option)
    return value


@overload
def task(fn: F, /) -> Task: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    depends_on: Iterable[str | Task] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    backoff: float = 1.0,
    max_delay: float | None = None,
    jitter: bool = False,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    timeout: float | None = None,
    executor: str | Executor | None = None,
    when: Callable[..., Any] | None = None,
    trigger: str = "all_success",
    on_error: str | None = None,
    on_failure: Callable[[Any], Any] | None = None,
    branch: bool = False,
    map: str | Iterable[str] | None = None,
    loop: Loop | None = None,
    resources: Resources | None = None,
    tags: Iterable[str] = (),
    rate_limit: str | RateLimit | None = None,
) -> Callable[[F], Task]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function into a :class:`Task`; ``@task`` and ``@task(...)`` both work.

    Inside a ``with workflow(...)`` block the task is also added to that workflow, named
    after the function unless ``name=`` is given. See :class:`Task` for the options.
    """
    unknown = set(options) - _TASK_OPTIONS
    if unknown:
        import difflib

        bad = sorted(unknown)[0]
        close = difflib.get_close_matches(bad, _TASK_OPTIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        msg = f"@task got an unknown option {bad!r}{hint} (options: {sorted(_TASK_OPTIONS)})"
        raise TypeError(msg)

    def decorate(func: Callable[..., Any]) -> Task:
        if not callable(func):
            msg = f"@task needs a function, got {func!r} ({type(func).__name__})"
            raise WorkflowDefinitionError(msg)
        name = options.get("name")
        made = Task(name, func, **{k: v for k, v in options.items() if k != "name"})
        wf = current_workflow.get()
        if wf is not None:
            wf.add_task(made)
        return made

    if fn is None:
        return decorate
    return decorate(fn)


_TASK_OPTIONS = frozenset(
    inspect.signature(Task.__init__).parameters.keys() - {"self", "fn"}
)


def branch(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """A task whose result names the direct downstream task (or a list of them) to run;
    the others are skipped with reason ``"not chosen by <branch>"``. ``@branch`` and
    ``@branch(...)`` take the options of :func:`task`. Also spelled ``@task.branch``."""
    make: Any = task  # the overloads do not cover passing options through
    return make(fn, **options, branch=True)


task.branch = branch  # type: ignore[attr-defined]

"""Workflows: the ``with workflow(...)`` block, parameter binding, and ``run()``.

Binding decides where each task parameter's value comes from, in this order:

1. ``ctx``, or a parameter annotated ``TaskContext``: the task's :class:`TaskContext`;
2. a parameter named after another task: that task's result (and a dependency on it);
3. a parameter named after a resource (``@wf.resource``): the shared resource;
4. a parameter named in the run's params: that value;
5. otherwise its default. A parameter with none of these is a definition error.

A ``**kwargs`` parameter also receives the results of declared dependencies not bound by
name, which is how a classic ``Task`` subclass's ``run(self, **inputs)`` gets its inputs.
Binding runs when the block exits (to find dependencies and report cycles early) and
again at ``run()``, when the run's params are known.
"""

from __future__ import annotations

import difflib
import inspect
import operator
import os
import secrets
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from ._binding import (
    FROM_CONTEXT,
    FROM_PARAM,
    FROM_RESOURCE,
    FROM_TASK,
    Binding,
    call_hook,
)
from ._private import gcpause
from ._private.current import current_workflow
from ._shared import Resource, ResourceRef
from .bus import EventBus
from .clock import Clock, SystemClock
from .dag import DAG, CompiledDAG
from .errors import WorkflowDefinitionError
from .executors import resolve
from .executors.base import ChecksCluster, Executor
from .persistence import DURABILITY
from .resources import RateLimit, ResourceLimits
from .result import RunResult
from .states import RunStatus
from .task import Task, TaskContext

if TYPE_CHECKING:
    from ._engine.admission import Admission, Request
    from .persistence.manager import PersistenceManager
    from .persistence.plan import Plan
    from .persistence.store import StateStore

__all__ = ["Workflow", "workflow"]

_ON_ERROR = ("fail_fast", "continue")


class Workflow:
    """A named DAG of tasks plus how to run it.

    ``executor`` is ``"sequential"``, ``"thread"`` (default), ``"process"`` or an
    :class:`~flowforge.executors.base.Executor`; ``max_workers`` sizes the pool it makes
    (default: the CPU count). ``on_error`` is ``"fail_fast"`` (default: nothing new
    starts after a failure) or ``"continue"`` (tasks downstream of a failure are skipped,
    the rest runs). ``timeout`` bounds the whole run in seconds.

    Persistence (on by default): each task's outcome and result is saved in ``state_dir``
    as it finishes, and running a workflow whose last run did not succeed resumes that run
    (``resume=False`` or ``run(fresh=True)`` starts afresh). ``autosave=False`` reads and
    writes no state at all. ``durability`` is ``"process"`` (a saved record survives the
    process dying) or ``"fsync"`` (it survives power loss too, at a cost per task);
    ``state_store`` is ``"files"``, ``"sqlite"`` or a
    :class:`~flowforge.persistence.StateStore`.

    Logging: one JSON line per event in ``<log_dir>/workflow.log`` (``log_dir=None``
    writes no file) and short lines on the console (``quiet=True`` silences them). On an
    interactive terminal a progress line shows done/total, running and failed tasks
    (``progress=False`` hides it).
    """

    def __init__(
        self,
        name: str,
        *,
        dag: DAG | None = None,
        executor: str | Executor = "thread",
        max_workers: int | None = None,
        params: Mapping[str, Any] | None = None,
        on_error: str = "fail_fast",
        timeout: float | None = None,
        log_dir: str | os.PathLike[str] | None = "logs",
        quiet: bool = False,
        progress: bool | None = None,
        clock: Clock | None = None,
        state_dir: str | os.PathLike[str] = "state",
        autosave: bool = True,
        resume: bool = True,
        durability: str = "process",
        state_store: str | StateStore = "files",
        limits: ResourceLimits | None = None,
        rate_limits: Mapping[str, RateLimit | str] | None = None,
        concurrency: Mapping[str, int] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            msg = f"a workflow needs a non-empty name, got {name!r}"
            raise WorkflowDefinitionError(msg)
        if on_error not in _ON_ERROR:
            msg = f"workflow {name!r}: on_error must be 'fail_fast' or 'continue', got {on_error!r}"
            raise WorkflowDefinitionError(msg, workflow=name)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            msg = f"workflow {name!r}: timeout must be positive seconds or None, got {timeout!r}"
            raise WorkflowDefinitionError(msg, workflow=name)
        if durability not in DURABILITY:
            msg = (
                f"workflow {name!r}: durability must be one of {', '.join(DURABILITY)}, "
                f"got {durability!r}"
            )
            raise WorkflowDefinitionError(msg, workflow=name)
        if state_store not in ("files", "sqlite") and not _is_store(state_store):
            msg = (
                f"workflow {name!r}: state_store must be 'files', 'sqlite' or a StateStore, "
                f"got {state_store!r}"
            )
            raise WorkflowDefinitionError(msg, workflow=name)
        self.name = name
        self.dag = dag if dag is not None else DAG(name=name)
        self.dag.name = name
        resolve(executor, max_workers, owner=f"workflow {name!r}")  # fail early on a typo
        self.executor = executor
        self.max_workers = max_workers
        self.params: dict[str, Any] = dict(params or {})
        self.on_error = on_error
        self.timeout = timeout
        self.log_dir = log_dir
        self.quiet = quiet
        self.progress = progress
        self.clock: Clock = clock or SystemClock()
        self.limits = limits
        self.rate_limits = {
            k: v if isinstance(v, RateLimit) else RateLimit(v)
            for k, v in (rate_limits or {}).items()
        }
        self.concurrency = dict(concurrency or {})
        for pool, cap in self.concurrency.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                msg = f"workflow {name!r}: concurrency[{pool!r}] must be a whole number >= 1"
                raise WorkflowDefinitionError(msg, workflow=name, option="concurrency")
        self.state_dir = state_dir
        self.autosave = autosave
        self.resume = resume
        self.durability = durability
        self.state_store = state_store
        self.events = EventBus()
        self._failure_hooks: list[Callable[[RunResult], Any]] = []
        #: Typed params of a YAML/JSON definition ({name: {type, required, default}}).
        self.param_types: dict[str, dict[str, Any]] = {}
        #: Where a definition came from (path, schedule, version), for loaded ones.
        self.definition: dict[str, Any] | None = None
        #: The file that defines this workflow (saved with its runs for flowforge resume);
        #: set by flowforge.load, else the running script.
        self.source: str | None = None
        self.shared_resources: dict[str, Resource] = {}
        self._token: Token[Workflow | None] | None = None
        # What validate() bound, with the definition it bound: run() reuses it once if
        # nothing that binding reads has changed since (see _definition_key).
        self._validated: tuple[tuple[Any, ...], dict[str, Binding], CompiledDAG] | None = None

    # -- definition ------------------------------------------------------------------

    def __enter__(self) -> Workflow:
        self._token = current_workflow.set(self)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._token is not None:
            current_workflow.reset(self._token)
            self._token = None
        if exc_type is None:
            self._bind(self.params, strict=False)

    def add_task(self, task: Task) -> Task:
        """Add ``task`` to this workflow (``@task`` inside the block does this)."""
        if getattr(task, "subflow", None) is not None:
            task.parent = self  # type: ignore[attr-defined]
        return self.dag.add_task(task)

    def as_task(
        self,
        name: str | None = None,
        *,
        map: str | Iterable[str] | None = None,
        params: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Task:
        """This workflow as one task of another (see :mod:`flowforge.subflow`); inside a
        ``with workflow(...)`` block it joins that workflow. Takes :func:`task`'s options."""
        from .subflow import SubflowTask

        made = SubflowTask(self, name or self.name, params=params, map=map, **options)
        current = current_workflow.get()
        if current is not None and current is not self:
            current.add_task(made)
        return made

    def add_subflow(
        self, flow: Workflow, *, name: str | None = None,
        params: Mapping[str, Any] | None = None, **options: Any,
    ) -> Task:
        """Add ``flow`` as one task of this workflow; its result is the dict of its task
        results. See :mod:`flowforge.subflow`."""
        from .subflow import SubflowTask

        return self.add_task(
            SubflowTask(flow, name or flow.name, params=params, **options)
        )

    @property
    def tasks(self) -> dict[str, Task]:
        """Tasks by name."""
        return self.dag.tasks

    def validate(self, params: Mapping[str, Any] | None = None) -> None:
        """Check the definition as ``run(params=...)`` would, without running anything."""
        merged = {**self.params, **(params or {})}
        self._validated = None
        bound = self._bind(merged, strict=True)
        self._resource_refs(merged)
        self._admission()
        self._validated = (self._definition_key(merged), *bound)

    # -- running ---------------------------------------------------------------------

    def run(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        executor: str | Executor | None = None,
        fresh: bool = False,
        job: str | None = None,
    ) -> RunResult:
        """Run the workflow and return a :class:`RunResult`; task failures do not raise
        (see ``RunResult.raise_for_status``), definition errors do, before anything runs.

        If the last run of this workflow in ``state_dir`` did not succeed, this run resumes
        it (see :meth:`plan`); ``fresh=True`` starts a new run whatever happened before.
        ``job`` names the scheduler job that started the run (kept with the saved run).
        Raises :class:`WorkflowLockedError` if another process is running it."""
        merged = {**self.params, **(params or {})}
        if self.param_types:
            from .definitions.params import check_params

            check_params(self, merged)
        owner = f"workflow {self.name!r}"
        from ._engine import Engine  # loaded on the first run: import flowforge stays light

        with gcpause.preparing():  # 100,000 tasks make a million long-lived objects
            bindings, graph = self._bound_for_run(merged)
            refs = self._resource_refs(merged) if self.shared_resources else None
            main = resolve(
                executor if executor is not None else self.executor, self.max_workers,
                owner=owner,
            )
            cluster = main if isinstance(main, ChecksCluster) else None
            admission, requests = self._admission(local=cluster is None)
            if cluster is not None:  # refuses requests no worker can meet, before any
                cluster.prepare(_cluster_requests(self.dag.tasks))  # state is written
            session = None
            if self.autosave:
                session = self._manager().begin(
                    self.name,
                    graph.order,
                    graph.upstream,
                    self._fingerprints(bindings, merged),
                    resume=self.resume and not fresh,
                    new_run_id=_new_run_id,
                    job=job,
                    target=self.source or _main_file(),
                    params=merged,
                )
            detach: Callable[[], None] = _nothing
            try:
                detach = self._attach_listeners(graph.order)  # before the engine asks
                engine = Engine(
                    workflow=self.name,
                    run_id=_new_run_id() if session is None else session.run_id,
                    graph=graph,
                    bindings=bindings,
                    params=merged,
                    executor=main,
                    task_executors=self._task_executors(main, owner),
                    on_error=self.on_error,
                    timeout=self.timeout,
                    clock=self.clock,
                    bus=self.events,
                    log_file=self._log_file(),
                    log_console=not self.quiet,
                    session=session,
                    fixtures=refs,
                    admission=admission,
                    requests=requests,
                )
            except BaseException:
                detach()
                if session is not None:
                    session.close()
                raise
        try:
            try:
                result = engine.run(executor_label=_label(main))
            finally:
                if session is not None:
                    session.close()
                detach()
        finally:
            gcpause.finished()
        if result.status is RunStatus.FAILED:
            for hook in self._failure_hooks:
                call_hook(hook, result, f"on_failure handler {hook!r} of workflow {self.name!r}")
        return result

    def resource(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Declare a shared resource, like a pytest fixture: tasks taking a parameter of
        its name receive it. A generator function's code after ``yield`` tears it down.
        Made on first use and torn down when the run ends (on the process executor:
        once per worker, torn down when the worker stops). It may take run params and
        other resources by name. Usable as ``@wf.resource`` or ``@wf.resource(name=...)``.
        """

        def declare(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                msg = f"workflow {self.name!r}: a resource needs a function, got {func!r}"
                raise WorkflowDefinitionError(msg, workflow=self.name)
            rname = name or getattr(func, "__name__", None)
            if not rname or rname in self.shared_resources:
                msg = (
                    f"workflow {self.name!r}: resource name {rname!r} is "
                    f"{'taken' if rname else 'missing'}; pass name=..."
                )
                raise WorkflowDefinitionError(msg, workflow=self.name, resource=rname)
            self.shared_resources[rname] = Resource(rname, func)
            return func

        return declare if fn is None else declare(fn)

    def on_failure(self, fn: Callable[[RunResult], Any]) -> Callable[[RunResult], Any]:
        """Register ``fn(result)`` to be called once, in the driver, when a run fails.
        Its own errors are logged and never hide the run's. Usable as a decorator."""
        if not callable(fn):
            msg = f"workflow {self.name!r}: on_failure needs a callable, got {fn!r}"
            raise WorkflowDefinitionError(msg, workflow=self.name)
        self._failure_hooks.append(fn)
        return fn

    def plan(self, params: Mapping[str, Any] | None = None, *, fresh: bool = False) -> Plan:
        """What :meth:`run` would do now with each task (restore its saved result, or run
        it, and why), without running or writing anything."""
        from .persistence.plan import make_plan

        merged = {**self.params, **(params or {})}
        bindings, graph = self._bind(merged, strict=True)
        fingerprints = self._fingerprints(bindings, merged)
        if not self.autosave:
            return make_plan(
                workflow=self.name, order=graph.order, upstream=graph.upstream,
                fingerprints=fingerprints, run_id=None, records={}, known=set(), versions={},
                notes=["autosave is off: nothing is saved or restored"],
            )
        return self._manager().plan(
            self.name, graph.order, graph.upstream, fingerprints,
            resume=self.resume and not fresh,
        )

    def _manager(self) -> PersistenceManager:
        from .persistence.manager import PersistenceManager

        return PersistenceManager(
            self.state_dir, store=self.state_store, durability=self.durability
        )

    def _fingerprints(
        self, bindings: Mapping[str, Binding], params: Mapping[str, Any]
    ) -> dict[str, str]:
        """``code/params`` per task: what decides whether a saved result still holds."""
        from .persistence.fingerprint import Fingerprinter

        fp = Fingerprinter(params)
        everything = sorted(params)
        out = {}
        for name, b in bindings.items():
            names = [src for _, kind, src in b.args if kind == FROM_PARAM]
            if any(kind == FROM_CONTEXT for _, kind, _ in b.args):
                names = everything  # ctx.params can read any of them
            out[name] = f"{fp.code(b.task)}/{fp.params(names)}"
        return out

    def _task_executors(self, main: Executor, owner: str) -> dict[str, Executor]:
        chosen: dict[str, Executor] = {}
        made: dict[Any, Executor] = {}
        for name, t in self.dag.tasks.items():
            spec = t.executor
            if spec is None or spec is main or spec == getattr(main, "name", None):
                continue
            key = spec if isinstance(spec, str) else id(spec)
            if key not in made:
                made[key] = resolve(spec, self.max_workers, owner=f"{owner} task {name!r}")
            chosen[name] = made[key]
        return chosen

    def _log_file(self) -> str | None:
        if self.log_dir is None:
            return None
        return os.path.join(os.fspath(self.log_dir), "workflow.log")

    def _attach_listeners(self, tasks: list[str]) -> Callable[[], None]:
        log_file = self._log_file()
        show_progress = self.progress
        if show_progress is None:
            show_progress = not self.quiet and _interactive()
        detachers: list[Callable[[], None]] = []
        # A dashboard watches this state folder: it sees the run live. (The folder is
        # listeners.live.WATCHERS, checked here so that unwatched runs import nothing.)
        if self.autosave and os.path.isdir(os.path.join(os.fspath(self.state_dir), ".watchers")):
            from .listeners.live import LiveListener

            detachers.append(LiveListener(self.state_dir).attach(self.events))
        if log_file is None and self.quiet and not show_progress:
            return _detach_all(detachers)
        from ._private.console import Console
        from .listeners.logging import LoggingListener

        console = Console(sys.stderr)
        if log_file is not None or not self.quiet:
            detachers.append(
                LoggingListener(log_file, console=None if self.quiet else console).attach(
                    self.events
                )
            )
        if show_progress:
            from .listeners.progress import ProgressListener

            detachers.append(
                ProgressListener(len(tasks), console, tasks=tasks).attach(self.events)
            )
        return _detach_all(detachers)

    # -- binding ---------------------------------------------------------------------

    def _bound_for_run(
        self, params: Mapping[str, Any]
    ) -> tuple[dict[str, Binding], CompiledDAG]:
        """The binding ``validate()`` just made, if the definition is unchanged since;
        else a fresh one. Used once: each later run binds again."""
        validated, self._validated = self._validated, None
        if validated is not None and validated[0] == self._definition_key(params):
            return validated[1], validated[2]
        return self._bind(params, strict=True)

    def _definition_key(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """Everything binding reads, copied: equal keys bind equally. Built with C-level
        ``map`` (about 0.3 µs a task) so that validate() then run() binds once."""
        tasks = self.dag.tasks
        values = tasks.values()
        return (
            list(tasks.items()),  # names and task identities, in order
            list(map(_BINDING_READS, values)),
            list(map(tuple, map(_DEPENDS_ON, values))),  # a copy: lists change in place
            frozenset(params),
            frozenset(self.shared_resources),
        )

    def _bind(
        self, params: Mapping[str, Any], *, strict: bool
    ) -> tuple[dict[str, Binding], CompiledDAG]:
        tasks = self.dag.tasks
        if strict and not tasks:
            msg = (
                f"workflow {self.name!r} has no tasks; define them with @task inside the "
                "`with workflow(...)` block or add them with wf.add_task(...)"
            )
            raise WorkflowDefinitionError(msg, workflow=self.name)
        bindings: dict[str, Binding] = {}
        resources = self.shared_resources
        for clash in resources.keys() & tasks.keys():
            msg = (
                f"workflow {self.name!r} has a task and a resource both named {clash!r}; "
                "rename one (a parameter of that name would be ambiguous)"
            )
            raise WorkflowDefinitionError(msg, workflow=self.name, task=clash)
        specs: dict[Any, _Signature] = {}  # 10,000 tasks often share one function
        for name, t in tasks.items():
            call = t.callable
            try:
                spec = specs.get(call) or specs.setdefault(call, _signature(call, name))
            except TypeError:  # an unhashable callable object
                spec = _signature(call, name)
            args: list[tuple[str, int, str]] = []
            inferred: list[str] = []
            uses = False
            for pname, has_default, is_context in spec.params:
                if is_context:
                    args.append((pname, FROM_CONTEXT, ""))
                elif pname in tasks and pname != name:
                    args.append((pname, FROM_TASK, pname))
                    inferred.append(pname)
                elif pname in resources:
                    args.append((pname, FROM_RESOURCE, pname))
                    uses = True
                elif pname in params:
                    args.append((pname, FROM_PARAM, pname))
                elif not has_default and strict:
                    raise self._unbound(name, pname)
            for mapped in t.map:
                if mapped in tasks and not spec.var_keyword and all(a[0] != mapped for a in args):
                    msg = (
                        f"task {name!r} maps over {mapped!r} but has no parameter named "
                        f"{mapped!r}; add one: it receives one item of {mapped!r}'s result"
                    )
                    raise WorkflowDefinitionError(
                        msg, workflow=self.name, task=name, parameter=mapped
                    )
            when_args: tuple[tuple[str, int, str], ...] = ()
            if t.when is not None:
                when_args = self._bind_condition(t, params, inferred, strict=strict)
            self.dag.set_inferred(name, tuple(inferred))
            extra: tuple[str, ...] = ()
            if spec.var_keyword and t.depends_on:
                if args:
                    bound = {a[0] for a in args}
                    extra = tuple(d for d in t.depends_on if d not in bound)
                else:
                    extra = tuple(t.depends_on)
            bindings[name] = Binding(t, call, tuple(args), extra, t.when, when_args, uses)
        return bindings, self.dag.compile()

    def _bind_condition(
        self, t: Task, params: Mapping[str, Any], inferred: list[str], *, strict: bool
    ) -> tuple[tuple[str, int, str], ...]:
        """Bind a ``when=`` condition like a task; the tasks it reads become upstreams."""
        assert t.when is not None
        tasks = self.dag.tasks
        args: list[tuple[str, int, str]] = []
        for pname, has_default, is_context in _signature(t.when, t.name).params:
            if is_context:
                args.append((pname, FROM_CONTEXT, ""))
            elif pname in tasks and pname != t.name:
                args.append((pname, FROM_TASK, pname))
                if pname not in inferred:
                    inferred.append(pname)
            elif pname in params:
                args.append((pname, FROM_PARAM, pname))
            elif not has_default and strict:
                err = self._unbound(t.name, pname)
                msg = err.message.replace(
                    f"task {t.name!r} has parameter",
                    f"the condition (when=) of task {t.name!r} has parameter",
                )
                raise WorkflowDefinitionError(
                    msg, workflow=self.name, task=t.name, parameter=pname
                )
        return tuple(args)

    def _admission(self, *, local: bool = True) -> tuple[Admission | None, dict[str, Request]]:
        """What admission control this run needs: None when nothing asks for any.
        ``local=False``: a cluster places CPU/memory/GPU requests; pools and rate limits
        are still kept here."""
        from ._engine.admission import admission_for

        return admission_for(
            self.dag.tasks, self.limits, self.rate_limits, self.concurrency, self.clock,
            sized=local,
        )

    def _resource_refs(self, params: Mapping[str, Any]) -> dict[str, ResourceRef]:
        """What each shared resource needs to be made anywhere."""
        from ._shared import resource_refs

        return resource_refs(self.name, self.shared_resources, params)

    def _unbound(self, task: str, param: str) -> WorkflowDefinitionError:
        close = difflib.get_close_matches(param, list(self.dag.tasks), n=1)
        hint = f" (did you mean task {close[0]!r}?)" if close else ""
        msg = (
            f"task {task!r} has parameter {param!r} that matches no task, param or default"
            f"{hint}; add a task named {param!r}, pass params={{{param!r}: ...}}, "
            "or give it a default"
        )
        return WorkflowDefinitionError(msg, workflow=self.name, task=task, parameter=param)

    def to_dict(self) -> dict[str, Any]:
        """Name, executor, params and tasks as plain data (see :mod:`flowforge.export`)."""
        from .export import to_dict

        return to_dict(self)

    def to_mermaid(self) -> str:
        """The DAG as a Mermaid flowchart."""
        from .export import to_mermaid

        return to_mermaid(self)

    def to_yaml(self) -> str:
        """The workflow as a YAML definition (see :mod:`flowforge.definitions`)."""
        from .export import to_yaml

        return to_yaml(self)

    def to_dot(self) -> str:
        """The DAG in Graphviz DOT."""
        from .export import to_dot

        return to_dot(self)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.dag)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} tasks={len(self.dag)}>"


def workflow(name: str, **options: Any) -> Workflow:
    """Start defining a workflow: ``with workflow("etl", executor="process") as wf: ...``.

    Takes the keyword options of :class:`Workflow`.
    """
    return Workflow(name, **options)


class _Signature:
    __slots__ = ("params", "var_keyword")

    def __init__(self, params: tuple[tuple[str, bool, bool], ...], var_keyword: bool) -> None:
        self.params = params
        self.var_keyword = var_keyword


# What binding reads from each task, besides depends_on (see _definition_key).
_BINDING_READS = operator.attrgetter("name", "callable", "when", "map")
_DEPENDS_ON = operator.attrgetter("depends_on")

_SIGNATURES: weakref.WeakKeyDictionary[Any, _Signature] = weakref.WeakKeyDictionary()


def _signature(call: Callable[..., Any], task: str) -> _Signature:
    """The parameters of ``call`` that binding cares about, cached per function."""
    key = getattr(call, "__func__", call)
    try:
        found = _SIGNATURES.get(key)
    except TypeError:
        found = None
    if found is not None:
        return found
    try:
        sig = inspect.signature(call)
    except (TypeError, ValueError) as exc:
        msg = f"task {task!r}: cannot read the parameters of {call!r} ({exc})"
        raise WorkflowDefinitionError(msg, task=task) from exc
    params: list[tuple[str, bool, bool]] = []
    var_keyword = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            msg = (
                f"task {task!r} has positional-only parameter {p.name!r}; FlowForge passes "
                "inputs by name, so remove the '/' from its signature"
            )
            raise WorkflowDefinitionError(msg, task=task, parameter=p.name)
        is_context = p.name == "ctx" or p.annotation in (
            TaskContext,
            "TaskContext",
            "flowforge.TaskContext",
            "flowforge.task.TaskContext",
        )
        params.append((p.name, p.default is not p.empty, is_context))
    found = _Signature(tuple(params), var_keyword)
    try:
        _SIGNATURES[key] = found
    except TypeError:
        pass
    return found


def _main_file() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) and path.endswith(".py") else None


def _cluster_requests(tasks: Mapping[str, Task]) -> dict[str, dict[str, float]]:
    """Dask worker resources per task: ``GPU`` and ``MEMORY`` from its Resources."""
    out: dict[str, dict[str, float]] = {}
    for name, t in tasks.items():
        r = t.resources
        if r is None:
            continue
        wanted = {k: float(v) for k, v in (("GPU", r.gpus), ("MEMORY", r.memory_bytes)) if v}
        if wanted:
            out[name] = wanted
    return out


def _nothing() -> None:
    pass


def _is_store(obj: object) -> bool:
    from .persistence.store import StateStore

    return isinstance(obj, StateStore)


def _new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _label(ex: Executor) -> str:
    return f"{getattr(ex, 'name', type(ex).__name__)}({getattr(ex, 'max_workers', '?')})"


def _detach_all(detachers: list[Callable[[], None]]) -> Callable[[], None]:
    """One function that detaches every listener in ``detachers``, last first."""

    def detach() -> None:
        for d in reversed(detachers):
            d()

    return detach


def _interactive() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False

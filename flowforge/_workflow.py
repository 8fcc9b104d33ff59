"""Workflows: the ``with workflow(...)`` block and the :class:`Workflow` object.

A workflow holds its tasks (a :class:`~flowforge.dag.DAG`) and how to run them. How
each task parameter gets its value is :mod:`flowforge._binding`'s job (run when the
block exits, and again at ``run()``); assembling a run (executors, admission, the run
session, listeners, the engine) is :mod:`flowforge._run`'s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import Token
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._binding import Binding, bind, definition_key
from ._fixtures import Fixture
from ._private.current import current_workflow
from ._task import Task
from .bus import EventBus
from .clock import Clock, SystemClock
from .dag import DAG, CompiledDAG
from .errors import WorkflowDefinitionError
from .executors import resolve
from .executors.base import Executor
from .persistence import DURABILITY
from .resources import RateLimit, ResourceLimits
from .result import RunResult

if TYPE_CHECKING:
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
        #: The file whose code created this workflow: part of its runs' key (see
        #: :mod:`flowforge.persistence.runkey`).
        self.defined_in: str | None = _caller_file()
        self.fixtures: dict[str, Fixture] = {}
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
        if params:
            from ._params import check_given

            check_given(self, params)
        bound = self._bind(merged, strict=True)
        from ._run import admission_of, check_subflows, fixture_refs

        check_subflows(self)
        fixture_refs(self, merged)
        admission_of(self)
        self._validated = (definition_key(self, merged), *bound)

    # -- running ---------------------------------------------------------------------

    def run(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        executor: str | Executor | None = None,
        fresh: bool = False,
        job: str | None = None,
        scheduled_for: datetime | None = None,
    ) -> RunResult:
        """Run the workflow and return a :class:`RunResult`; task failures do not raise
        (see ``RunResult.raise_for_status``), definition errors do, before anything runs.

        If the last run of this workflow in ``state_dir`` did not succeed, this run resumes
        it (see :meth:`plan`); ``fresh=True`` starts a new run whatever happened before.
        ``job`` names the scheduler job that started the run (kept with the saved run)
        and ``scheduled_for`` (an aware datetime) the fire time it runs for: tasks see it
        as ``ctx.scheduled_for``, and it is part of the run's key, so a run resumes only
        a run of the same fire (see :mod:`flowforge.persistence.runkey`).
        Raises :class:`WorkflowLockedError` if another process is running it."""
        merged = {**self.params, **(params or {})}
        if params:
            from ._params import check_given

            check_given(self, params)
        if self.param_types:
            from .definitions.params import check_params

            check_params(self, merged)
        if scheduled_for is not None and (
            not isinstance(scheduled_for, datetime) or scheduled_for.tzinfo is None
        ):
            msg = f"run(scheduled_for=...) takes an aware datetime, got {scheduled_for!r}"
            raise WorkflowDefinitionError(msg, workflow=self.name)
        from ._run import run_workflow  # loaded on the first run: import flowforge stays light

        return run_workflow(self, merged, executor=executor, fresh=fresh, job=job,
                            scheduled_for=scheduled_for)

    def fixture(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Declare a fixture, as in pytest: tasks taking a parameter of its name receive
        its value. A generator function's code after ``yield`` tears it down. Made on
        first use and torn down when the run ends (on the process executor: once per
        worker, torn down when the worker stops). It may take run params and other
        fixtures by name. Usable as ``@wf.fixture`` or ``@wf.fixture(name=...)``.
        """

        def declare(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                msg = f"workflow {self.name!r}: a fixture needs a function, got {func!r}"
                raise WorkflowDefinitionError(msg, workflow=self.name)
            rname = name or getattr(func, "__name__", None)
            if not rname or rname in self.fixtures:
                msg = (
                    f"workflow {self.name!r}: fixture name {rname!r} is "
                    f"{'taken' if rname else 'missing'}; pass name=..."
                )
                raise WorkflowDefinitionError(msg, workflow=self.name, fixture=rname)
            self.fixtures[rname] = Fixture(rname, func)
            return func

        return declare if fn is None else declare(fn)

    def resource(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Deprecated name of :meth:`fixture` (``Resources`` are requests: CPUs, memory)."""
        import warnings

        warnings.warn(
            "wf.resource is now wf.fixture (the same decorator); the old name goes in a "
            "later release", DeprecationWarning, stacklevel=2,
        )
        return self.fixture(fn, name=name)

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
        from ._run import fingerprints, manager, run_key
        from .persistence.plan import make_plan

        merged = {**self.params, **(params or {})}
        if params:
            from ._params import check_given

            check_given(self, params)
        bindings, graph = self._bind(merged, strict=True)
        prints = fingerprints(bindings, merged)
        if not self.autosave:
            return make_plan(
                workflow=self.name, order=graph.order, upstream=graph.upstream,
                fingerprints=prints, run_id=None, records={}, known=set(), versions={},
                notes=["autosave is off: nothing is saved or restored"],
            )
        return manager(self).plan(
            self.name, graph.order, graph.upstream, prints,
            resume=self.resume and not fresh, key=run_key(self, merged),
        )

    # -- binding ---------------------------------------------------------------------

    def _bound_for_run(
        self, params: Mapping[str, Any]
    ) -> tuple[dict[str, Binding], CompiledDAG]:
        """The binding ``validate()`` just made, if the definition is unchanged since;
        else a fresh one. Used once: each later run binds again."""
        validated, self._validated = self._validated, None
        if validated is not None and validated[0] == definition_key(self, params):
            return validated[1], validated[2]
        return self._bind(params, strict=True)

    def _bind(
        self, params: Mapping[str, Any], *, strict: bool
    ) -> tuple[dict[str, Binding], CompiledDAG]:
        return bind(self, params, strict=strict)

    def to_dict(self) -> dict[str, Any]:
        """Name, executor, params and tasks as plain data (see :mod:`flowforge.export`)."""
        from .export import to_dict

        return to_dict(self)

    def to_mermaid(self) -> str:
        """The DAG as a Mermaid flowchart."""
        from .export import to_mermaid

        return to_mermaid(self)

    def to_yaml(self, folder: str | None = None) -> str:
        """The workflow as a YAML definition (see :mod:`flowforge.definitions`) that runs
        the same when saved in ``folder`` (default: the working folder)."""
        from .export import to_yaml

        return to_yaml(self, folder)

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


def _is_store(obj: object) -> bool:
    from .persistence.store import StateStore

    return isinstance(obj, StateStore)


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _caller_file() -> str | None:
    """The first file up the stack outside FlowForge: where the workflow is defined."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(_PACKAGE) and not path.startswith("<frozen"):
            return path if not path.startswith("<") else None
        frame = frame.f_back  # type: ignore[assignment]
    return None

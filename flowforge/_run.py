"""Run assembly: from a workflow and its params to a running engine.

:func:`run_workflow` binds the definition, resolves the executors, sets up admission
control, opens the run session (which decides what resumes), attaches the listeners,
and hands all of it to the engine; it closes what it opened whatever happens. The
helpers here are also what ``Workflow.plan()`` and ``validate()`` use, so a plan sees
exactly what a run would."""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._binding import FROM_CONTEXT, FROM_PARAM, Binding, call_hook
from ._private import gcpause
from .executors import resolve
from .executors.base import ChecksCluster, Executor
from .result import RunResult
from .states import RunStatus

if TYPE_CHECKING:
    from ._engine.admission import Admission, Request
    from ._fixtures import FixtureRef
    from ._task import Task
    from ._workflow import Workflow
    from .persistence.manager import PersistenceManager
    from .persistence.runkey import RunKey

__all__ = [
    "admission_of", "check_subflows", "fingerprints", "fixture_refs", "manager", "new_run_id",
    "run_key", "run_workflow",
]


def run_workflow(
    wf: Workflow, merged: Mapping[str, Any], *, executor: str | Executor | None,
    fresh: bool, job: str | None, scheduled_for: datetime | None = None,
) -> RunResult:
    """Run ``wf`` with params ``merged`` (see :meth:`Workflow.run`)."""
    owner = f"workflow {wf.name!r}"
    from ._engine import Engine, RunSpec  # loaded on the first run: import flowforge stays light

    with gcpause.preparing():  # 100,000 tasks make a million long-lived objects
        bindings, graph = wf._bound_for_run(merged)
        check_subflows(wf)
        refs = fixture_refs(wf, merged) if wf.fixtures else None
        main = resolve(
            executor if executor is not None else wf.executor, wf.max_workers,
            owner=owner,
        )
        cluster = main if isinstance(main, ChecksCluster) else None
        admission, requests = admission_of(wf, local=cluster is None)
        if cluster is not None:  # refuses requests no worker can meet, before any
            cluster.prepare(_cluster_requests(wf.dag.tasks))  # state is written
        session = None
        if wf.autosave:
            session = manager(wf).begin(
                wf.name,
                graph.order,
                graph.upstream,
                fingerprints(bindings, merged),
                resume=wf.resume and not fresh,
                new_run_id=new_run_id,
                job=job,
                target=wf.source or _main_file(),
                params=merged,
                key=run_key(wf, merged, scheduled_for),
            )
        detach: Callable[[], None] = _nothing
        try:
            detach = attach_listeners(wf, graph.order)  # before the engine asks
            engine = Engine(RunSpec(
                workflow=wf.name,
                run_id=new_run_id() if session is None else session.run_id,
                graph=graph,
                bindings=bindings,
                params=merged,
                executor=main,
                task_executors=task_executors(wf, main, owner),
                on_error=wf.on_error,
                timeout=wf.timeout,
                clock=wf.clock,
                bus=wf.events,
                log_file=log_file(wf),
                log_console=not wf.quiet,
                session=session,
                fixtures=refs or {},
                admission=admission,
                requests=requests,
                scheduled_for=scheduled_for,
            ))
            if session is not None:
                session.watch_cancel(engine.cancel)
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
        for hook in wf._failure_hooks:
            call_hook(hook, result, f"on_failure handler {hook!r} of workflow {wf.name!r}")
    return result


def run_key(
    wf: Workflow, params: Mapping[str, Any], scheduled_for: datetime | None = None
) -> RunKey:
    """The key of a run of ``wf`` with ``params``: which earlier run it may resume."""
    from .persistence.runkey import RunKey

    when = None if scheduled_for is None else scheduled_for.isoformat()
    return RunKey.of(wf.defined_in or wf.source, params, when)


def check_subflows(wf: Workflow) -> None:
    """Refuse a mapped subflow whose items have no clear param to go to."""
    from .subflow import SubflowTask

    for t in wf.dag.tasks.values():
        if t.map and isinstance(t, SubflowTask):
            t.item_target()


def manager(wf: Workflow) -> PersistenceManager:
    """The persistence manager of ``wf``'s state folder and store."""
    from .persistence.manager import PersistenceManager

    return PersistenceManager(
        wf.state_dir, store=wf.state_store, durability=wf.durability
    )

def fingerprints(
    bindings: Mapping[str, Binding], params: Mapping[str, Any]
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

def task_executors(wf: Workflow, main: Executor, owner: str) -> dict[str, Executor]:
    """The executors tasks asked for with ``@task(executor=...)``, other than ``main``
    (one instance per distinct spec)."""
    chosen: dict[str, Executor] = {}
    made: dict[Any, Executor] = {}
    for name, t in wf.dag.tasks.items():
        spec = t.executor
        if spec is None or spec is main or spec == getattr(main, "name", None):
            continue
        key = spec if isinstance(spec, str) else id(spec)
        if key not in made:
            made[key] = resolve(spec, wf.max_workers, owner=f"{owner} task {name!r}")
        chosen[name] = made[key]
    return chosen

def log_file(wf: Workflow) -> str | None:
    if wf.log_dir is None:
        return None
    return os.path.join(os.fspath(wf.log_dir), "workflow.log")

def attach_listeners(wf: Workflow, tasks: list[str]) -> Callable[[], None]:
    """Attach the run's listeners (log file, console, progress line, live dashboard);
    returns the function that detaches them."""
    path = log_file(wf)
    show_progress = wf.progress
    if show_progress is None:
        show_progress = not wf.quiet and _interactive()
    detachers: list[Callable[[], None]] = []
    # A dashboard watches this state folder: it sees the run live. (The folder is
    # listeners.live.WATCHERS, checked here so that unwatched runs import nothing.)
    if wf.autosave and os.path.isdir(os.path.join(os.fspath(wf.state_dir), ".watchers")):
        from .listeners.live import LiveListener

        detachers.append(LiveListener(wf.state_dir).attach(wf.events))
    if path is None and wf.quiet and not show_progress:
        return _detach_all(detachers)
    from ._private.console import Console
    from .listeners.logging import LoggingListener

    console = Console(sys.stderr)
    if path is not None or not wf.quiet:
        detachers.append(
            LoggingListener(path, console=None if wf.quiet else console).attach(
                wf.events
            )
        )
    if show_progress:
        from .listeners.progress import ProgressListener

        detachers.append(
            ProgressListener(len(tasks), console, tasks=tasks).attach(wf.events)
        )
    return _detach_all(detachers)


def admission_of(
    wf: Workflow, *, local: bool = True
) -> tuple[Admission | None, dict[str, Request]]:
    """What admission control this run needs: None when nothing asks for any.
    ``local=False``: a cluster places CPU/memory/GPU requests; pools and rate limits
    are still kept here."""
    from ._engine.admission import admission_for

    return admission_for(
        wf.dag.tasks, wf.limits, wf.rate_limits, wf.concurrency, wf.clock,
        sized=local,
    )


def fixture_refs(wf: Workflow, params: Mapping[str, Any]) -> dict[str, FixtureRef]:
    """What each fixture of ``wf`` needs to be made anywhere."""
    from ._fixtures import make_refs

    return make_refs(wf.name, wf.fixtures, params)


def _main_file() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) and path.endswith(".py") else None


def _cluster_requests(tasks: Mapping[str, Task]) -> dict[str, dict[str, float]]:
    """Dask worker resources per task: ``CPU``, ``GPU`` and ``MEMORY`` from its
    Resources."""
    out: dict[str, dict[str, float]] = {}
    for name, t in tasks.items():
        r = t.resources
        if r is None:
            continue
        wanted = {k: float(v) for k, v in (("CPU", r.cpus), ("GPU", r.gpus),
                                           ("MEMORY", r.memory_bytes)) if v}
        if wanted:
            out[name] = wanted
    return out


def _nothing() -> None:
    pass


def new_run_id() -> str:
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

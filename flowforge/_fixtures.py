"""Fixtures: values tasks receive by parameter name, made once and cleaned up, like
pytest fixtures (``@wf.fixture``). Not to be confused with resource requests
(``Resources(cpus=...)``), which admission control counts.

A fixture function may be a plain function (its return value is the fixture) or a
generator function (what it yields is the fixture; the code after ``yield`` is the
tear-down). It may take run params and other fixtures by name.

Where it lives:

* in the driver, for the sequential and thread executors: a :class:`FixturePool` per run
  makes each fixture the first time a task needs it and tears them all down, newest
  first, when the run ends, whether it succeeded or not;
* in each process worker, for the process executor: a task's argument travels as a
  :class:`FixtureRef` (the function and its params, not the value, which is often a
  connection that cannot be pickled); the worker makes the fixture on first use and
  keeps it for the worker's life, tearing it down when the pool shuts the worker down.

A fixture whose set-up raises fails the task that needed it, with a message naming the
fixture; the next task that needs it tries again.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import TaskError

__all__ = ["Fixture", "FixturePool", "FixtureRef", "resolve_refs", "make_refs"]

_log = logging.getLogger("flowforge")


@dataclass(frozen=True)
class Fixture:
    """A fixture as declared: its name and the function that makes it."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class FixtureRef:
    """What a task's argument holds until the fixture is made where the task runs."""

    name: str
    fn: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    needs: Mapping[str, FixtureRef] = field(default_factory=dict)
    key: str = ""  # the run it belongs to: a worker keeps one per run and name


class FixturePool:
    """The fixtures made in one place (the driver, or a worker), torn down together."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], Any] = {}
        self._teardowns: list[tuple[str, Any]] = []
        self._lock = threading.RLock()

    def get(self, ref: FixtureRef) -> Any:
        """The fixture ``ref`` names, made now if this is its first use."""
        key = (ref.key, ref.name)
        with self._lock:
            if key in self._made:
                return self._made[key]
            kwargs = dict(ref.params)
            for param, need in ref.needs.items():
                kwargs[param] = self.get(need)
            try:
                made = ref.fn(**kwargs)
                if inspect.isgenerator(made):
                    gen = made
                    made = next(gen)
                    self._teardowns.append((ref.name, gen))
            except StopIteration:
                msg = (
                    f"fixture {ref.name!r} did not yield a value; a generator fixture "
                    "yields exactly once"
                )
                raise TaskError(msg, fixture=ref.name) from None
            except Exception as exc:
                msg = (
                    f"fixture {ref.name!r} failed to set up ({type(exc).__name__}: {exc}); "
                    "the tasks that need it fail"
                )
                raise TaskError(msg, fixture=ref.name) from exc
            self._made[key] = made
            return made

    def close(self) -> None:
        """Tear down every generator fixture, newest first; errors are logged only."""
        with self._lock:
            teardowns, self._teardowns = self._teardowns, []
            self._made.clear()
        for name, gen in reversed(teardowns):
            try:
                next(gen)
            except StopIteration:
                continue
            except Exception:
                _log.exception("fixture %r raised while tearing down", name)
                continue
            _log.error("fixture %r yielded more than once; only the first value is used", name)


def resolve_refs(kwargs: dict[str, Any], pool: FixturePool) -> dict[str, Any]:
    """``kwargs`` with every :class:`FixtureRef` replaced by its fixture from ``pool``."""
    for param, value in kwargs.items():
        if isinstance(value, FixtureRef):
            kwargs[param] = pool.get(value)
    return kwargs


_worker_pool: FixturePool | None = None


def worker_pool() -> FixturePool:
    """This worker process's pool, torn down when the process exits: through
    ``multiprocessing``'s exit finalizers, which run when a forked worker ends with
    ``os._exit`` (the fork server's workers do, so ``atexit`` never runs there), and
    through ``atexit`` for a worker that ends as an interpreter does. ``close`` runs
    each tear-down once."""
    global _worker_pool
    if _worker_pool is None:
        from multiprocessing import util

        pool = _worker_pool = FixturePool()
        util.Finalize(pool, pool.close, exitpriority=10)
        atexit.register(pool.close)
    return _worker_pool


def make_refs(
    workflow: str, shared: Mapping[str, Fixture], params: Mapping[str, Any]
) -> dict[str, FixtureRef]:
    """What each fixture needs to be made anywhere: its params and other fixtures.

    A fixture parameter names another fixture, a run param, or has a default; anything
    else, and fixtures needing each other in a cycle, are definition errors."""
    from .errors import WorkflowDefinitionError

    refs: dict[str, FixtureRef] = {}

    def ref(rname: str, chain: tuple[str, ...]) -> FixtureRef:
        if rname in refs:
            return refs[rname]
        if rname in chain:
            cycle = " -> ".join((*chain, rname))
            msg = f"workflow {workflow!r}: fixtures need each other in a cycle: {cycle}"
            raise WorkflowDefinitionError(msg, workflow=workflow, fixture=rname)
        res = shared[rname]
        given: dict[str, Any] = {}
        needs: dict[str, FixtureRef] = {}
        for p in inspect.signature(res.fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name in shared:
                needs[p.name] = ref(p.name, (*chain, rname))
            elif p.name in params:
                given[p.name] = params[p.name]
            elif p.default is p.empty:
                msg = (
                    f"fixture {rname!r} has parameter {p.name!r} that matches no param or "
                    f"fixture; pass params={{{p.name!r}: ...}} or give it a default"
                )
                raise WorkflowDefinitionError(
                    msg, workflow=workflow, fixture=rname, parameter=p.name
                )
        refs[rname] = FixtureRef(rname, res.fn, given, needs)
        return refs[rname]

    for rname in shared:
        ref(rname, ())
    return refs

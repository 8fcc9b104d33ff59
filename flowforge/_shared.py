"""Shared resources: values tasks receive by parameter name, made once and cleaned up,
like pytest fixtures (``@wf.resource``).

A resource function may be a plain function (its return value is the resource) or a
generator function (what it yields is the resource; the code after ``yield`` is the
tear-down). It may take run params and other resources by name.

Where it lives:

* in the driver, for the sequential and thread executors: a :class:`ResourcePool` per run
  makes each resource the first time a task needs it and tears them all down, newest
  first, when the run ends, whether it succeeded or not;
* in each process worker, for the process executor: a task's argument travels as a
  :class:`ResourceRef` (the function and its params, not the value, which is often a
  connection that cannot be pickled); the worker makes the resource on first use and
  keeps it for the worker's life, tearing it down when the pool shuts the worker down.

A resource whose set-up raises fails the task that needed it, with a message naming the
resource; the next task that needs it tries again.
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

__all__ = ["Resource", "ResourcePool", "ResourceRef", "resolve_refs", "resource_refs"]

_log = logging.getLogger("flowforge")


@dataclass(frozen=True)
class Resource:
    """A resource as declared: its name and the function that makes it."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class ResourceRef:
    """What a task's argument holds until the resource is made where the task runs."""

    name: str
    fn: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    needs: Mapping[str, ResourceRef] = field(default_factory=dict)
    key: str = ""  # the run it belongs to: a worker keeps one per run and name


class ResourcePool:
    """The resources made in one place (the driver, or a worker), torn down together."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], Any] = {}
        self._teardowns: list[tuple[str, Any]] = []
        self._lock = threading.RLock()

    def get(self, ref: ResourceRef) -> Any:
        """The resource ``ref`` names, made now if this is its first use."""
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
                    f"resource {ref.name!r} did not yield a value; a generator resource "
                    "yields exactly once"
                )
                raise TaskError(msg, resource=ref.name) from None
            except Exception as exc:
                msg = (
                    f"resource {ref.name!r} failed to set up ({type(exc).__name__}: {exc}); "
                    "the tasks that need it fail"
                )
                raise TaskError(msg, resource=ref.name) from exc
            self._made[key] = made
            return made

    def close(self) -> None:
        """Tear down every generator resource, newest first; errors are logged only."""
        with self._lock:
            teardowns, self._teardowns = self._teardowns, []
            self._made.clear()
        for name, gen in reversed(teardowns):
            try:
                next(gen)
            except StopIteration:
                continue
            except Exception:
                _log.exception("resource %r raised while tearing down", name)
                continue
            _log.error("resource %r yielded more than once; only the first value is used", name)


def resolve_refs(kwargs: dict[str, Any], pool: ResourcePool) -> dict[str, Any]:
    """``kwargs`` with every :class:`ResourceRef` replaced by its resource from ``pool``."""
    for param, value in kwargs.items():
        if isinstance(value, ResourceRef):
            kwargs[param] = pool.get(value)
    return kwargs


_worker_pool: ResourcePool | None = None


def worker_pool() -> ResourcePool:
    """This worker process's pool, torn down when the process exits."""
    global _worker_pool
    if _worker_pool is None:
        _worker_pool = ResourcePool()
        atexit.register(_worker_pool.close)
    return _worker_pool


def resource_refs(
    workflow: str, shared: Mapping[str, Resource], params: Mapping[str, Any]
) -> dict[str, ResourceRef]:
    """What each resource needs to be made anywhere: its params and other resources.

    A resource parameter names another resource, a run param, or has a default; anything
    else, and resources needing each other in a cycle, are definition errors."""
    from .errors import WorkflowDefinitionError

    refs: dict[str, ResourceRef] = {}

    def ref(rname: str, chain: tuple[str, ...]) -> ResourceRef:
        if rname in refs:
            return refs[rname]
        if rname in chain:
            cycle = " -> ".join((*chain, rname))
            msg = f"workflow {workflow!r}: resources need each other in a cycle: {cycle}"
            raise WorkflowDefinitionError(msg, workflow=workflow, resource=rname)
        res = shared[rname]
        given: dict[str, Any] = {}
        needs: dict[str, ResourceRef] = {}
        for p in inspect.signature(res.fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name in shared:
                needs[p.name] = ref(p.name, (*chain, rname))
            elif p.name in params:
                given[p.name] = params[p.name]
            elif p.default is p.empty:
                msg = (
                    f"resource {rname!r} has parameter {p.name!r} that matches no param or "
                    f"resource; pass params={{{p.name!r}: ...}} or give it a default"
                )
                raise WorkflowDefinitionError(
                    msg, workflow=workflow, resource=rname, parameter=p.name
                )
        refs[rname] = ResourceRef(rname, res.fn, given, needs)
        return refs[rname]

    for rname in shared:
        ref(rname, ())
    return refs

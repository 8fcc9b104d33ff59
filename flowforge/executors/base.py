"""The executor interface: a thin adapter the engine hands attempts to.

The whole required contract is ``submit(fn, /, *args, **kwargs) -> Future`` and
``shutdown(wait=True)``, as in ``concurrent.futures``, plus ``max_workers`` (how many
attempts it runs at once: the engine never hands it more) and ``cancel_running(future)``
(stop the attempt behind a future if it can: True when stopped, False when it could only
be abandoned). Any object with ``submit`` and ``shutdown`` is adapted to this (see
:func:`flowforge.executors.resolve`).

What an executor can do beyond that, it says by implementing a :class:`typing.Protocol`
the engine checks with ``isinstance``; nothing else about an executor is asked:

* :class:`InProcess`: it runs attempts in threads of the driver process, so nothing is
  pickled and the engine may run a lone attempt in its own thread (sequential, thread).
  An executor that is not ``InProcess`` gets each attempt pickled by the engine, which
  can then name the task and the object at fault when pickling fails;
* :class:`TakesAttempts`: it packs attempts itself, several into one pickle or with
  their inputs left on a cluster (process, Dask);
* :class:`Batching`: it sends small attempts in batches, so it may hold more than it
  has workers (``room``), and can drop those it has not sent yet (process);
* :class:`WorkerProcesses`: it names the process an attempt runs in, so memory
  requests can be enforced (process);
* :class:`SharesResults`: large results go by reference, in a file or kept on a
  cluster's workers; the engine then holds handles (process, Dask);
* :class:`ChecksCluster`: it checks, before anything runs, that its workers can meet
  every task's requests (Dask).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Adapted", "AttemptCall", "Batching", "ChecksCluster", "Executor", "FuturesExecutor",
    "InProcess", "SharesResults", "TakesAttempts", "WorkerProcesses", "default_workers",
]


def default_workers() -> int:
    """The CPU count this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class AttemptCall(NamedTuple):
    """One attempt as the engine hands it to a :class:`TakesAttempts` executor: call
    ``task`` with ``kwargs``, in environment ``env`` (extra variables, or None), writing a
    large result where ``policy`` says; ``name`` is the task's. ``solo``: send it alone,
    never in a batch (it has a timeout, or admission counts it). ``ahead``: it may wait
    in a busy worker's pipe to start the instant that worker is done, without a round
    trip through the driver; the engine allows it only when nothing it does between
    attempts must come first (no autosave: a killed driver re-runs at most the attempts
    running; no admission: it counts what runs)."""

    task: Any
    kwargs: dict[str, Any]
    env: dict[str, str] | None
    policy: Any
    name: str
    solo: bool = False
    ahead: bool = False


class Executor(ABC):
    """Base class of FlowForge executors."""

    name: str = "executor"
    max_workers: int = 1

    @abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` and return its future."""

    @abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Release workers. The executor starts new ones if it is used again."""

    def cancel_running(self, future: Future[Any]) -> bool:
        """Stop the work behind ``future`` if possible; True if it was stopped."""
        return future.cancel()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"


@runtime_checkable
class InProcess(Protocol):
    """Runs attempts in threads of the driver process."""

    def may_run_here(self, alone: bool) -> bool:
        """Whether the engine may call an attempt in its own thread instead of submitting
        it (same effect, less cost); ``alone``: nothing else runs, is ready or is due. A
        function of ``alone`` only: the engine asks once for each value per run."""
        ...

    def submit_timed(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """``submit`` for an attempt with a timeout: never in the caller's thread, so the
        engine can give up on it."""
        ...


@runtime_checkable
class TakesAttempts(Protocol):
    """Packs attempts itself rather than running the engine's pickled call."""

    def submit_attempt(self, call: AttemptCall) -> Future[Any]:
        """Run one attempt; the future's result is the packed outcome
        (:func:`flowforge._private.remote.unpack_outcome` reads it)."""
        ...


@runtime_checkable
class Batching(Protocol):
    """Sends small attempts to its workers in batches."""

    def room(self, name: str, ahead: bool = False) -> int:
        """How many attempts of task ``name`` it takes at once (may exceed
        ``max_workers`` for a small task, or with ``ahead``: see
        :attr:`AttemptCall.ahead`)."""
        ...

    def cancel_queued(self) -> list[Future[Any]]:
        """Drop the attempts not yet sent to a worker; their futures."""
        ...


@runtime_checkable
class WorkerProcesses(Protocol):
    """Runs each attempt in a process it can name."""

    def worker_pid(self, future: Future[Any]) -> int | None:
        """The process running the attempt behind ``future`` (None: not started yet)."""
        ...


@runtime_checkable
class SharesResults(Protocol):
    """Hands results of ``share_threshold`` bytes or more over by reference. With
    ``on_cluster`` its workers keep them (and write a file only to save one); otherwise
    they write them to files on this machine that other workers map."""

    share_threshold: int | None
    on_cluster: bool


@runtime_checkable
class ChecksCluster(Protocol):
    """Has workers elsewhere whose resources it checks before the run."""

    def prepare(self, requests: dict[str, dict[str, float]]) -> None:
        """Refuse (ValueError) any task's request no worker can meet."""
        ...


@runtime_checkable
class FuturesExecutor(Protocol):
    """What ``concurrent.futures`` executors offer, and all an executor must."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        ...

    def shutdown(self, wait: bool = True) -> None:
        ...


class Adapted(Executor):
    """Any :class:`FuturesExecutor` (a ``concurrent.futures.ThreadPoolExecutor``, say)
    used as a FlowForge executor. It is not :class:`InProcess` as far as the engine
    knows, so each attempt reaches it pickled, which is correct anywhere it runs."""

    def __init__(self, inner: FuturesExecutor) -> None:
        self.inner = inner
        self.name = type(inner).__name__
        workers = getattr(inner, "max_workers", None) or getattr(inner, "_max_workers", None)
        self.max_workers = workers if isinstance(workers, int) and workers > 0 else (
            default_workers()
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        self.inner.shutdown(wait=wait)

    def __repr__(self) -> str:
        return f"Adapted({self.inner!r})"

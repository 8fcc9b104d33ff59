"""The executor interface: a thin adapter the engine hands work to.

An executor offers ``submit(fn, /, *args, **kwargs) -> Future`` and ``shutdown()``, like
``concurrent.futures``. Three optional traits tell the engine how to use it:

* ``max_workers``: how many attempts it runs at once (the engine never submits more);
* ``inline``: it runs work in the caller's thread, so the engine may call the task
  directly and skip the future machinery (the sequential executor);
* ``isolated``: work crosses a process boundary, so the engine pickles each attempt
  itself and can name the task and the object at fault when pickling fails;
* ``takes_tasks``: it takes task attempts unpickled (``submit_task``) and pickles them
  itself: several at once (process), or leaving inputs on the cluster (Dask);
* ``batching``: it sends small attempts to its workers in batches, and says through
  ``room(task)`` how many attempts of a task the engine may hand it at once;
* ``holds_results``: large results stay on its workers; the engine holds handles.

``cancel_running(future)`` stops the attempt behind a future if the executor can (a
process can be killed) or abandons it (a thread cannot), returning True when stopped.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["Executor", "default_workers"]


def default_workers() -> int:
    """The CPU count this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Executor(ABC):
    """Base class of FlowForge executors."""

    name: str = "executor"
    max_workers: int = 1
    inline: bool = False
    isolated: bool = False
    takes_tasks: bool = False  # offers submit_task(): it pickles attempts itself
    batching: bool = False  # offers room(): small attempts queue and go in batches
    holds_results: bool = False  # large results stay on its workers (a cluster)

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

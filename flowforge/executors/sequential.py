"""The sequential executor: runs each task in the calling thread, one at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .base import Executor

__all__ = ["SequentialExecutor"]


class SequentialExecutor(Executor):
    """Runs work immediately in the caller's thread; ``submit`` returns a done future.

    A task with a ``timeout`` runs on a helper thread instead (``submit_timed``), so the
    engine can give up on it; the thread cannot be killed and is abandoned.
    """

    name = "sequential"
    max_workers = 1

    def may_run_here(self, alone: bool) -> bool:
        """Always: running in the caller's thread is what this executor does."""
        return True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def submit_timed(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run on a daemon thread of its own and return at once."""
        future: Future[Any] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name="flowforge-detached", daemon=True).start()
        return future

    def cancel_running(self, future: Future[Any]) -> bool:
        return False

    def shutdown(self, wait: bool = True) -> None:
        return None

    def __repr__(self) -> str:
        return "SequentialExecutor()"

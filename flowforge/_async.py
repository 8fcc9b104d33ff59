"""``async def`` tasks: awaited on one event loop per thread, reused across attempts.

A task whose function is a coroutine function is called through :class:`AsyncCall`,
which every executor calls like a plain function: it runs the coroutine to completion on
the calling thread's own event loop (made once per thread, so a worker process or pool
thread keeps one loop, and clients bound to it, across attempts). A task ``timeout=``
cancels the coroutine itself, so its ``finally`` blocks run, and the attempt fails with
:class:`~flowforge.errors.TaskTimeoutError` as any timed-out attempt does. A thread that
already runs a loop (a notebook's) cannot run another: there the coroutine goes to one
helper thread's loop and the caller waits.

A plain function that returns a coroutine it never awaited is a mistake the engine
reports (:func:`not_a_coroutine`) rather than saving the coroutine as a result.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from .errors import TaskError, TaskTimeoutError

__all__ = ["AsyncCall", "is_async", "not_a_coroutine", "unawaited"]

_local = threading.local()
_helper: asyncio.AbstractEventLoop | None = None
_helper_lock = threading.Lock()


def is_async(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine (an ``async def``, or a partial of one)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn)


class AsyncCall:
    """Calls coroutine function ``fn`` of task ``name`` to completion (module docstring)."""

    __slots__ = ("fn", "name", "timeout", "__signature__", "__wrapped__")

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, Any]], name: str,
                 timeout: float | None) -> None:
        self.fn = fn
        self.name = name
        self.timeout = timeout
        self.__wrapped__ = fn
        self.__signature__ = inspect.signature(fn)

    @property
    def __code__(self) -> Any:  # what fingerprints and batching read of a function
        return getattr(self.fn, "__code__", None)

    def __call__(self, **kwargs: Any) -> Any:
        coro = self._bounded(self.fn(**kwargs))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no loop runs in this thread
            return _thread_loop().run_until_complete(coro)
        return asyncio.run_coroutine_threadsafe(coro, _helper_loop()).result()

    async def _bounded(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self.timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, self.timeout)
        except TimeoutError:
            msg = (f"task {self.name!r} timed out after {self.timeout}s (its coroutine was "
                   "cancelled); raise timeout= or make the task faster")
            raise TaskTimeoutError(msg, task=self.name, timeout=self.timeout) from None

    def __reduce__(self) -> tuple[Any, ...]:
        return (AsyncCall, (self.fn, self.name, self.timeout))

    def __repr__(self) -> str:
        return f"AsyncCall({self.fn!r})"


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _helper_loop() -> asyncio.AbstractEventLoop:
    global _helper
    with _helper_lock:
        if _helper is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="flowforge-async",
                             daemon=True).start()
            _helper = loop
        return _helper


def unawaited(name: str, coroutine: Any) -> TaskError:
    """The error of task ``name``, a plain function that returned ``coroutine`` without
    awaiting it (closed here, so Python does not warn about it later)."""
    coroutine.close()
    msg = (f"task {name!r} returned a coroutine it never awaited; make the task "
           "`async def` (FlowForge awaits it), or await the call inside it")
    return TaskError(msg, task=name)


def not_a_coroutine(name: str, value: Any) -> Any:
    """``value`` unless it is a coroutine a plain function returned un-awaited: then
    :func:`unawaited`'s error is raised."""
    if inspect.iscoroutine(value):
        raise unawaited(name, value)
    return value

"""Executors: where task attempts run. See :mod:`flowforge.executors.base`."""

from __future__ import annotations

import difflib
from typing import Any

from .base import Adapted, Executor, FuturesExecutor
from .process import ProcessExecutor
from .sequential import SequentialExecutor
from .thread import ThreadExecutor

__all__ = [
    "DaskExecutor", "Executor", "ProcessExecutor", "SequentialExecutor", "ThreadExecutor",
    "resolve",
]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":  # the dask extra: imported only when asked for
        from .dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_BY_NAME: dict[str, Any] = {
    "sequential": SequentialExecutor,
    "thread": ThreadExecutor,
    "threads": ThreadExecutor,
    "process": ProcessExecutor,
    "processes": ProcessExecutor,
}


def resolve(spec: Any, max_workers: int | None = None, *, owner: str = "workflow") -> Executor:
    """Turn an executor name or instance into an :class:`Executor`."""
    if isinstance(spec, Executor):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key == "dask":
            from .dask import DaskExecutor

            return DaskExecutor()
        factory = _BY_NAME.get(key)
        if factory is None:
            close = difflib.get_close_matches(
                key, ["sequential", "thread", "process", "dask"], n=1
            )
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = (
                f"{owner}: executor {spec!r} is not known{hint} "
                "(use 'sequential', 'thread', 'process' or an Executor instance)"
            )
            raise ValueError(msg)
        if factory is SequentialExecutor:
            return SequentialExecutor()
        return factory(max_workers=max_workers)
    if isinstance(spec, FuturesExecutor):  # concurrent.futures' own, or alike
        return Adapted(spec)
    msg = (
        f"{owner}: executor must be 'sequential', 'thread', 'process' or an Executor "
        f"instance, got {spec!r}"
    )
    raise TypeError(msg)

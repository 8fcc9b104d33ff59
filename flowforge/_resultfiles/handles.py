"""Handles: what the driver holds instead of a large result, and how a value is brought
back where it is needed.

A :class:`Handle` is a result held somewhere other than the driver's memory: in a file
(:class:`~flowforge._resultfiles.format.ResultFile`) or on a Dask worker
(``DaskResult``). Isolated workers receive
handles as they are; the driver calls :func:`materialize` only where it needs a value
itself (a thread task's input, a condition, a branch, a map's list) and
:func:`hold_all` at the end of a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["Handle", "hold_all", "holds_handles", "map_inputs", "materialize",
           "materialize_inputs"]


class Handle:
    """A result held somewhere other than the driver's memory: in a file
    (:class:`~flowforge._resultfiles.format.ResultFile`) or on a Dask worker. ``load()``
    brings the value here; ``file`` is the file it is saved in, if any."""

    __slots__ = ()

    def load(self) -> Any:
        raise NotImplementedError

    @property
    def file(self) -> Any:
        return None


def holds_handles(value: Any) -> bool:
    """True when ``value`` is a handle or a list holding one (a mapped task's result)."""
    if isinstance(value, Handle):
        return True
    return type(value) is list and any(isinstance(v, Handle) for v in value)


def materialize(value: Any) -> Any:
    """``value`` with handles (at the top or in a list) replaced by what they hold."""
    if isinstance(value, Handle):
        return value.load()
    if type(value) is list and any(isinstance(v, Handle) for v in value):
        return [v.load() if isinstance(v, Handle) else v for v in value]
    return value


def map_inputs(kwargs: dict[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any]:
    """``kwargs`` of one attempt with ``convert`` applied to every input: each argument,
    and the ``inputs`` and ``previous`` of a ``ctx`` (replaced only when one changed)."""
    from .._task import TaskContext

    out = {}
    for name, value in kwargs.items():
        if isinstance(value, TaskContext):
            inputs = {k: convert(v) for k, v in value.inputs.items()}
            previous = convert(value.previous)
            if previous is not value.previous or any(
                inputs[k] is not v for k, v in value.inputs.items()
            ):
                value = dataclasses.replace(value, inputs=inputs, previous=previous)
        else:
            value = convert(value)
        out[name] = value
    return out


def materialize_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of one attempt with every handle replaced, in a ``ctx`` too."""
    return map_inputs(kwargs, materialize)


def hold_all(results: dict[str, Any]) -> None:
    """At the end of a run, before its executors stop: map or fetch every result still
    held as a handle into ``results`` (mapped values stay valid once files are gone)."""
    for name, value in list(results.items()):
        if holds_handles(value):
            try:
                results[name] = materialize(value)
            except Exception:  # pragma: no cover - gone under us: keep the handle
                continue

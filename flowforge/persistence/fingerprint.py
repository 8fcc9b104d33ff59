"""Fingerprints: has a task's code, options or input params changed since its result was saved?

The code part hashes the *bytecode* of the task's function (its instructions, constants,
names, and any nested functions), not its source text: editing a comment or moving the
function down the file keeps its saved result, editing what it computes does not. The
Python version is part of every saved header, so bytecode is only ever compared within
one Python version. Values a closure captures and functions the task calls are not
part of it: change those and run with ``fresh=True``.

The options part covers what the task was declared with (retries, timeout, ...), except
``executor``: where a task runs does not change what it returns. The params part hashes
the run params the task takes, so a run with other params recomputes what reads them.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import pickle
import types
from collections.abc import Mapping
from typing import Any

from .._task import Task

__all__ = ["Fingerprinter"]

_OPTIONS = ("retries", "retry_delay", "backoff", "max_delay", "jitter", "retry_on", "timeout")
_options_of = operator.attrgetter(*_OPTIONS)


class Fingerprinter:
    """Computes ``code`` and ``params`` fingerprints, caching per code object and param."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = params
        self._code: dict[int, tuple[types.CodeType, bytes]] = {}
        self._param_digests: dict[str, bytes] = {}
        self._tasks: dict[tuple[Any, ...], str] = {}

    def code(self, task: Task) -> str:
        call = task.callable
        code = getattr(getattr(call, "__func__", call), "__code__", None)
        if code is None:  # partials, callable objects: rare, not worth a cache
            return self._code_fingerprint(task)
        # Tasks made in a loop share a function and options: hash each combination once.
        key = (type(task), code, _options_of(task))
        try:
            found = self._tasks.get(key)
        except TypeError:  # an unhashable option value
            return self._code_fingerprint(task)
        if found is None:
            found = self._tasks[key] = self._code_fingerprint(task)
        return found

    def _code_fingerprint(self, task: Task) -> str:
        h = hashlib.blake2b(digest_size=10)
        if type(task) is not Task:
            h.update(type(task).__qualname__.encode())
        parts = getattr(task, "fingerprint_parts", None)
        if parts is not None:  # a definition's task: its target function and expressions
            for part in parts():
                h.update(self._callable_digest(part) if callable(part) else
                         _value_digest(part))
        flow = getattr(task, "subflow", None)
        if flow is not None:  # a subflow changes when any of its tasks does
            for inner in flow.dag.tasks.values():
                h.update(inner.name.encode() + self.code(inner).encode())
            h.update(_value_digest(sorted(getattr(task, "subflow_params", {}).items())))
        h.update(self._callable_digest(task.callable))
        h.update(repr(tuple(_option(task, o) for o in _OPTIONS)).encode())
        return h.hexdigest()

    def params(self, names: list[str]) -> str:
        if not names:
            return ""
        h = hashlib.blake2b(digest_size=10)
        for name in sorted(names):
            h.update(name.encode() + b"=" + self._param_digest(name) + b";")
        return h.hexdigest()

    # -- parts -----------------------------------------------------------------------

    def _callable_digest(self, obj: Any) -> bytes:
        if isinstance(obj, functools.partial):
            return (
                self._callable_digest(obj.func)
                + _value_digest(obj.args)
                + _value_digest(sorted(obj.keywords.items()))
            )
        func = getattr(obj, "__func__", obj)  # bound methods
        code = getattr(func, "__code__", None)
        if code is None:
            code = getattr(type(obj).__dict__.get("__call__"), "__code__", None)
        if code is None:  # a builtin: its name is all there is
            return repr(getattr(obj, "__qualname__", obj)).encode()
        found = self._code.get(id(code))
        if found is not None and found[0] is code:
            return found[1]
        digest = _code_digest(code)
        self._code[id(code)] = (code, digest)
        return digest

    def _param_digest(self, name: str) -> bytes:
        found = self._param_digests.get(name)
        if found is None:
            found = _value_digest(self._params.get(name))
            self._param_digests[name] = found
        return found


def _code_digest(code: types.CodeType) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    _feed(h, code)
    return h.digest()


def _feed(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    h.update(repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed(h, const)
        else:
            h.update(repr(const).encode())


def _value_digest(value: Any) -> bytes:
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:  # an unpicklable param: its repr is the best we have
        data = repr(value).encode()
    return hashlib.blake2b(data, digest_size=10).digest()


def _option(task: Task, name: str) -> Any:
    value = getattr(task, name, None)
    if isinstance(value, tuple):
        return tuple(getattr(v, "__qualname__", v) for v in value)
    if isinstance(value, type):
        return value.__qualname__
    return value

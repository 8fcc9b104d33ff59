"""Real file names for functions that travel by value to process workers.

cloudpickle sends a function it cannot import by name (one defined in the script being
run, or inside another function) as its code, and names that code's file
``<dynamic-code>`` so that its pickles do not depend on where they were made. A worker's
traceback then reads ``File "<dynamic-code>", line 7`` with no source line. A task
remembers its function's real file when it is pickled (:func:`origin_of`), and the
worker gives it back to that function, to the code nested in it, and to the other
functions of its module sent along with it (:func:`relabel`), so tracebacks name the
file and line and show the source line, as a local traceback does.
"""

from __future__ import annotations

from types import CodeType, FunctionType
from typing import Any

__all__ = ["origin_of", "relabel"]

_DYNAMIC = "<dynamic-code>"


def origin_of(fn: Any) -> str | None:
    """The file ``fn``'s code comes from, if it is a real one."""
    code = getattr(fn, "__code__", None)
    name = getattr(code, "co_filename", None)
    return name if isinstance(name, str) and name and not name.startswith("<") else None


def relabel(fn: Any, origin: str) -> None:
    """Give ``fn`` (and its module's other functions sent by value) file ``origin``."""
    if not isinstance(fn, FunctionType) or fn.__code__.co_filename != _DYNAMIC:
        return
    fn.__code__ = _with_file(fn.__code__, origin)
    module = fn.__module__
    for value in list(fn.__globals__.values()):
        if (isinstance(value, FunctionType) and value.__module__ == module
                and value.__code__.co_filename == _DYNAMIC):
            value.__code__ = _with_file(value.__code__, origin)


def _with_file(code: CodeType, origin: str) -> CodeType:
    consts = tuple(_with_file(c, origin) if isinstance(c, CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=origin, co_consts=consts)

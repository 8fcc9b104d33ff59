"""Names and module paths that moved in a release: they keep working for a while, with
a ``DeprecationWarning`` that says where they live now."""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["MovedModule", "moved_names"]


def moved_names(
    package: str, moved: dict[str, str], fallback: Callable[[str], Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__``: a name in ``moved`` (name -> its module now) is looked
    up there with a warning; any other goes to ``fallback``."""

    def __getattr__(name: str) -> Any:
        where = moved.get(name)
        if where is None:
            return fallback(name)
        warnings.warn(
            f"{package}.{name} moved: import it from {where} "
            f"(from {where} import {name}); the old name goes in a later release",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(import_module(where), name)

    return __getattr__


class MovedModule(types.ModuleType):
    """A module path that no longer exists: attribute lookups go to ``target`` with a
    warning. Registered in ``sys.modules`` only, so the package attribute of the same
    name (``flowforge.task``, the decorator) is left alone."""

    def __init__(self, name: str, target: str, names: tuple[str, ...]) -> None:
        super().__init__(name, f"Deprecated: the names of {name} live in {target}.")
        self._target = target
        self._names = names

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name not in self._names:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"{self.__name__} is no longer a module: import {name} from "
            f"{self._target} (from {self._target} import {name})",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(import_module(self._target), name)

    def __dir__(self) -> list[str]:
        return list(self._names)

    @classmethod
    def register(cls, name: str, target: str, names: tuple[str, ...]) -> None:
        sys.modules.setdefault(name, cls(name, target, names))

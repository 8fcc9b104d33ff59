"""Module-level ``__getattr__`` that imports a public name on first use (PEP 562), the
way ``concurrent.futures`` keeps its process pool out of a plain import."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, where: dict[str, str], namespace: dict[str, Any]) -> Callable[
    [str], Any
]:
    """A ``__getattr__`` for ``package``: ``where`` maps a name to the submodule holding
    it; the first lookup imports it and caches it in ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__

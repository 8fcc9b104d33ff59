"""Finding workflows to run: ``flowforge.load(TARGET)`` for a Python file or a module.

A file is executed under a module name of its own (never ``__main__``, so its
``if __name__ == "__main__":`` block does not run), with its folder on the import path;
a dotted name is imported. Every :class:`~flowforge.Workflow` at the top level
of the result is returned, by name.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
from typing import TYPE_CHECKING

from .errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from ._workflow import Workflow

__all__ = ["load", "pick"]


def load(target: str) -> dict[str, Workflow]:
    """The workflows ``target`` (``path/to/file.py`` or ``package.module``) defines."""
    from ._workflow import Workflow

    if target.endswith((".yaml", ".yml", ".json")):
        from .definitions.loading import load_definition

        wf = load_definition(target)
        wf.source = os.path.abspath(target)
        return {wf.name: wf}
    if target.endswith(".py") or os.sep in target or os.path.exists(target):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            msg = f"{target}: no such file"
            raise WorkflowDefinitionError(msg, path=target)
        module, root = _module_of(path)
        if root not in sys.path:
            sys.path.insert(0, root)
        if module is not None:  # a file inside a package: import it, relative imports work
            namespace = _import(module, target)
        else:
            try:
                namespace = runpy.run_path(path, run_name="__flowforge_target__")
            except Exception as exc:
                raise _load_error(target, exc) from exc
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        namespace = _import(target, target)
    found = {v.name: v for v in namespace.values() if isinstance(v, Workflow)}
    source = os.path.abspath(target) if os.path.exists(target) else str(
        namespace.get("__file__") or target
    )
    for wf in found.values():
        wf.source = source
    if not found:
        msg = (
            f"{target} defines no workflow at its top level; define one with "
            "`with workflow(...) as wf:`"
        )
        raise WorkflowDefinitionError(msg, path=target)
    return found


def _module_of(path: str) -> tuple[str | None, str]:
    """(dotted module name, folder to import it from) for a file inside packages;
    (None, its folder) for a loose script."""
    folder, stem = os.path.split(path)
    parts = [os.path.splitext(stem)[0]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, package = os.path.split(folder)
        parts.append(package)
    if len(parts) == 1:
        return None, folder
    return ".".join(reversed(parts)), folder


def _import(module: str, target: str) -> dict[str, object]:
    try:
        return vars(importlib.import_module(module))
    except Exception as exc:
        raise _load_error(target, exc) from exc


def _load_error(target: str, exc: BaseException) -> WorkflowDefinitionError:
    where = ""
    ours = os.path.dirname(os.path.abspath(__file__))
    tb = exc.__traceback__
    while tb is not None:  # the user's innermost frame: where to look
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".py") and not filename.startswith(ours):
            where = f" ({filename}:{tb.tb_lineno})"
        tb = tb.tb_next
    msg = f"cannot load {target}: {type(exc).__name__}: {exc}{where}"
    return WorkflowDefinitionError(msg, path=target)


def pick(found: dict[str, Workflow], name: str | None, target: str) -> Workflow:
    """The one workflow the user means: ``name``, or the only one there is."""
    if name is not None:
        try:
            return found[name]
        except KeyError:
            msg = f"{target} has no workflow named {name!r}; it has {', '.join(found)}"
            raise WorkflowDefinitionError(msg, path=target) from None
    if len(found) > 1:
        msg = f"{target} defines several workflows ({', '.join(found)}); pick one with --workflow"
        raise WorkflowDefinitionError(msg, path=target)
    return next(iter(found.values()))

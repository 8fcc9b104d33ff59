"""The tasks and conditions a definition builds: :class:`DefinitionTask` (a ``call:`` or
an ``if:``), ``fixtures:`` factories, and ``when:`` / ``until:`` expressions.

None of them needs :mod:`flowforge._workflow`: they are what a workflow holds, not what
builds it (that is :mod:`flowforge.definitions.loading`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from .._expressions import ExpressionError, condition, evaluate
from .._task import Task, TaskContext
from ..errors import WorkflowDefinitionError

__all__ = ["LOOP_NAMES", "DefinitionTask", "ExpressionCondition", "ExpressionUntil"]


class DefinitionTask(Task):
    """A task from a definition: evaluates its ``with:`` expressions against its
    upstream results and the params, then calls its function (or tests its ``if:``)."""

    def __init__(self, name: str, *, target: str | None, args: Mapping[str, Any],
                 test: str | None = None, then: list[str] | None = None,
                 otherwise: list[str] | None = None, item_from: str | None = None,
                 uses: tuple[str, ...] = (), **options: Any) -> None:
        super().__init__(name, None, **options)
        self.uses = tuple(uses)  # fixtures its expressions name
        self.target = target
        self.args = dict(args)
        self.test = test
        self.then = list(then or [])
        self.otherwise = list(otherwise or [])
        self.item_from = item_from
        self.function = _import_target(target, name) if target else None

    def run(self, ctx: TaskContext, **inputs: Any) -> Any:  # type: ignore[override]
        scope: dict[str, Any] = {**inputs, "params": dict(ctx.params)}
        if self.loop is not None:
            scope["iteration"], scope["previous"] = ctx.iteration, ctx.previous
        if self.item_from is not None:
            scope["item"] = inputs.pop(self.item_from)
            scope.pop(self.item_from, None)
        try:
            if self.test is not None:
                return self.then if condition(self.test).evaluate(scope) else self.otherwise
            if self.function is None:  # the items of a map: `map: "${...}"`
                items = evaluate(self.args["items"], scope)
                if isinstance(items, dict):  # lockstep: {x: "${a}", y: "${b}"}
                    columns = {k: list(v) for k, v in items.items()}
                    if len({len(c) for c in columns.values()}) > 1:
                        sizes = ", ".join(f"{k}: {len(c)}" for k, c in columns.items())
                        raise ExpressionError(f"lockstep map lengths differ ({sizes})")
                    return [dict(zip(columns, row, strict=True))
                            for row in zip(*columns.values(), strict=True)]
                return items
            return self.function(**evaluate(self.args, scope))
        except ExpressionError as exc:
            raise WorkflowDefinitionError(f"task {self.name!r}: {exc}", task=self.name) from None

    @property
    def callable(self) -> Any:
        """``run`` with a signature naming ``ctx`` and the fixtures it uses, so the
        engine binds them like a Python task's parameters."""
        return _BoundCall(self) if self.uses else self.run

    def fingerprint_parts(self) -> list[Any]:
        """What besides the class's code decides this task's result (see fingerprints)."""
        return [self.function, self.args, self.test, self.then, self.otherwise]


class _BoundCall:
    """A definition task's ``run`` as the engine sees it (see ``DefinitionTask.callable``)."""

    def __init__(self, task: DefinitionTask) -> None:
        import inspect

        self.task = task
        kw = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature([
            inspect.Parameter("ctx", kw),
            *(inspect.Parameter(n, kw) for n in task.uses),
            inspect.Parameter("inputs", inspect.Parameter.VAR_KEYWORD),
        ])

    def __call__(self, **kwargs: Any) -> Any:
        return self.task.run(**kwargs)


class _SharedFactory:
    """A YAML ``fixtures:`` entry: calls its function with its evaluated ``with:``."""

    def __init__(self, target: str, args: Mapping[str, Any], params: list[str]) -> None:
        import inspect

        self.target = target
        self.args = dict(args)
        kw = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature([inspect.Parameter(n, kw) for n in params])

    def __call__(self, **params: Any) -> Any:
        fn = _import_target(self.target, f"fixture {self.target}")
        return fn(**evaluate(self.args, {"params": params}))


class ExpressionCondition:
    """A ``when:`` expression as a task condition: it takes the tasks it names (and
    ``ctx`` for the params), so the engine binds it like any condition."""

    def __init__(self, source: str, tasks: list[str]) -> None:
        import inspect

        self.source = source
        self.tasks = tasks
        kinds = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature(
            [inspect.Parameter("ctx", kinds), *(inspect.Parameter(n, kinds) for n in tasks)]
        )

    def __call__(self, ctx: TaskContext, **inputs: Any) -> bool:
        return bool(condition(self.source).evaluate({**inputs, "params": dict(ctx.params)}))


#: What a looping task's ``with:`` reads besides tasks and params.
LOOP_NAMES = ("previous", "iteration")


class ExpressionUntil:
    """A loop's ``until:`` expression. It reads ``${result}`` (the iteration's result),
    ``${iteration}`` (its number, from 0) and ``${params.NAME}``."""

    NAMES = ("result", "iteration", "params")

    def __init__(self, source: str) -> None:
        self.source = source
        self._expr = condition(source)
        unknown = sorted(self._expr.reads - set(self.NAMES))
        if unknown:
            msg = (
                f"loop until: ${{{unknown[0]}}} is not known there; it reads ${{result}}, "
                "${iteration} and ${params.NAME} (use a task's result through with: and "
                "return what until: needs)"
            )
            raise WorkflowDefinitionError(msg, option="until")

    def __call__(self, result: Any) -> bool:
        return self.scoped(result, None, {})

    def scoped(self, result: Any, iteration: int | None, params: Mapping[str, Any]) -> bool:
        """Whether the loop is done after ``iteration`` gave ``result``."""
        scope = {"result": result, "iteration": iteration, "params": dict(params)}
        return bool(self._expr.evaluate(scope))


#: Comma-separated module prefixes a definition's ``call:`` may name (unset: any);
#: ``flowforge run --allow-module PREFIX`` sets it for its own process.
ALLOWED_MODULES_ENV = "FLOWFORGE_ALLOWED_MODULES"


def allowed_modules() -> list[str] | None:
    """The module prefixes definitions may call, or None for any."""
    raw = os.environ.get(ALLOWED_MODULES_ENV)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def _import_target(target: str, task: str) -> Any:
    module, _, attr = target.partition(":")
    allowed = allowed_modules()
    if allowed is not None and not any(
        module == prefix or module.startswith(prefix + ".") for prefix in allowed
    ):  # checked before importing: importing a module runs its code
        shown = ", ".join(allowed) or "none"
        msg = (f"call: {target} is not allowed here: this run may call only modules under "
               f"{shown} (--allow-module, {ALLOWED_MODULES_ENV})")
        raise WorkflowDefinitionError(msg, task=task)
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        msg = f"cannot import {target!r} ({exc}); put {module}.py beside the file or install it"
        raise WorkflowDefinitionError(msg, task=task) from None
    return getattr(obj, "fn", None) or obj if isinstance(obj, Task) else obj

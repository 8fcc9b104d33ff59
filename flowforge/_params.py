"""The params a run is given: which names a workflow knows, and command-line text made
into the values its tasks expect.

A workflow knows the params it declares (``workflow(params={...})``, YAML ``params:``)
and those its tasks, ``when=`` conditions and fixtures take by name (a parameter that is
neither a task nor a fixture nor ``ctx``). A run given any other name is refused before
anything runs, naming the closest known one: a typo would otherwise run the workflow
with its default. Looking only costs when a run is given a param it does not declare.
"""

from __future__ import annotations

import difflib
import inspect
import json
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._binding import _signature
from .errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from ._workflow import Workflow

__all__ = ["check_given", "from_text", "known_params", "required_params"]


def _takers(wf: Workflow) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(what, callable) for everything that takes params by name."""
    for name, t in wf.dag.tasks.items():
        if t.callable is not None:
            yield f"task {name!r}", t.callable
        if t.when is not None:
            yield f"the condition of task {name!r}", t.when
    for name, fixture in wf.fixtures.items():
        yield f"fixture {name!r}", fixture.fn


def known_params(wf: Workflow) -> set[str]:
    """Every param name ``wf`` declares or takes by name."""
    known = set(wf.params) | set(getattr(wf, "param_types", {}))
    tasks, fixtures = wf.dag.tasks, wf.fixtures
    for what, call in _takers(wf):
        try:
            spec = _signature(call, what)
        except WorkflowDefinitionError:
            continue  # binding reports it, with its own words
        for pname, _, is_context in spec.params:
            if not is_context and pname not in tasks and pname not in fixtures:
                known.add(pname)
    return known


def required_params(wf: Workflow) -> set[str]:
    """The params ``wf`` takes by name with no default and does not declare."""
    tasks, fixtures = wf.dag.tasks, wf.fixtures
    declared = set(wf.params)
    required = set()
    for what, call in _takers(wf):
        try:
            spec = _signature(call, what)
        except WorkflowDefinitionError:
            continue
        for pname, has_default, is_context in spec.params:
            if not (has_default or is_context or pname in tasks or pname in fixtures
                    or pname in declared):
                required.add(pname)
    return required


def check_given(wf: Workflow, given: Mapping[str, Any], *, flag: str = "param") -> None:
    """Refuse a param in ``given`` that ``wf`` neither declares nor takes by name."""
    extra = [p for p in given if p not in wf.params]
    if not extra:
        return
    known = known_params(wf)
    for name in extra:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(repr(k) for k in sorted(known)) or "none"
        msg = (
            f"unknown {flag} {name!r}{hint} Workflow {wf.name!r} takes: {listed} (a "
            "workflow takes the params it declares and those its tasks take by name)"
        )
        raise WorkflowDefinitionError(msg, workflow=wf.name, parameter=name)


#: What ``-p NAME=TEXT`` becomes for each expected type.
_PLAIN: dict[Any, Callable[[str], Any]] = {
    int: int, float: float, str: str, Path: Path,
    date: date.fromisoformat, datetime: datetime.fromisoformat,
}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def from_text(wf: Workflow, name: str, text: str) -> Any:
    """The value of ``-p name=text``: converted to the type the workflow expects for
    ``name`` (a task parameter's hint, or its default's type, or the declared default's);
    JSON if it parses and no type is known, else the text. ValueError naming the param
    when ``text`` is not of the expected type."""
    expected = _expected_type(wf, name)
    if expected is None:
        try:
            return json.loads(text)
        except ValueError:
            return text
    try:
        if expected is bool:
            low = text.strip().lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise ValueError(text)
        if expected in (list, dict):
            value = json.loads(text)
            if not isinstance(value, expected):
                raise ValueError(text)
            return value
        return _PLAIN[expected](text)
    except ValueError:
        example = {int: "10", float: "0.5", bool: "true", list: "[1, 2]", dict: '{"a": 1}',
                   date: "2026-12-07", datetime: "2026-12-07T09:30:00+00:00"}.get(expected, "")
        like = f", like -p {name}={example}" if example else ""
        msg = f"-p {name}={text}: {name} takes {expected.__name__} values{like}"
        raise ValueError(msg) from None


def _expected_type(wf: Workflow, name: str) -> type | None:
    """The first type found for param ``name``: a hint, else a default's type."""
    declared = getattr(wf, "param_types", {}).get(name, {}).get("type")
    by_schema = {"integer": int, "number": float, "boolean": bool, "string": str,
                 "array": list, "object": dict}
    if declared in by_schema:
        return by_schema[declared]
    for _, call in _takers(wf):
        try:
            param = inspect.signature(call).parameters.get(name)
        except (TypeError, ValueError):
            continue
        if param is None:
            continue
        hint = param.annotation
        if isinstance(hint, str):  # from __future__ import annotations
            try:
                hint = typing.get_type_hints(call).get(name, hint)
            except Exception:  # a hint naming what the module does not define
                pass
        found = _as_type(hint)
        if found is None and param.default is not param.empty:
            found = _as_type(type(param.default))
        if found is not None:
            return found
    if name in wf.params and wf.params[name] is not None:
        return _as_type(type(wf.params[name]))
    return None


def _as_type(hint: Any) -> type | None:
    """A hint as one of the types ``from_text`` knows; None if it is not one."""
    origin = typing.get_origin(hint)
    if origin is not None:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if origin in (list, dict):
            return origin
        if len(args) == 1:  # Optional[int], int | None
            return _as_type(args[0])
        return None
    if isinstance(hint, str):
        return _NAMED.get(hint)
    if hint in _PLAIN or hint in (bool, list, dict):
        return hint
    if isinstance(hint, type) and issubclass(hint, Path):
        return Path
    return None


_NAMED = {"int": int, "float": float, "str": str, "bool": bool, "Path": Path, "date": date,
          "datetime": datetime, "list": list, "dict": dict}

"""``${...}`` expressions in YAML/JSON definitions, evaluated safely.

An expression is parsed by :mod:`ast` and walked here; only these forms exist: names
(a task's result, ``params``, ``item`` in a mapped task, ``true``/``false``/``null``),
field access (``${extract.files}``: a key of a mapping), indexing with a literal
(``${rows[0]}``), comparisons, ``and``/``or``/``not``, arithmetic, literals and lists.
Nothing is ever passed to ``eval``. A string that is exactly one ``${...}`` gives the
expression's value; a string with text around expressions gives that text with each
value inserted.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Expression", "ExpressionError", "condition", "evaluate", "find", "references"]

_PATTERN = re.compile(r"\$\{([^}]*)\}")
_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False,
              "None": None}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


_MAX_REPEAT = 10**6  # "x" * n above this is refused: a definition is not a memory bomb


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated."""


class Expression:
    """One parsed ``${...}``: its source and the names it reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self.tree = ast.parse(source.strip(), mode="eval").body
        except SyntaxError as exc:
            msg = f"${{{source}}} is not a valid expression ({exc.msg})"
            raise ExpressionError(msg) from None
        self.names = sorted(_names(self.tree))
        #: The names it looks up (``true``, ``null`` and the like excluded).
        self.reads = set(self.names) - set(_CONSTANTS)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        return _eval(self.tree, scope, self.source)


def find(text: str) -> list[Expression]:
    """Every expression in a string."""
    return [Expression(m.group(1)) for m in _PATTERN.finditer(text)]


def references(value: Any) -> set[str]:
    """The top-level names that ``value`` (a string, list or mapping of them) reads."""
    found: set[str] = set()
    if isinstance(value, str):
        for expr in find(value):
            found |= expr.reads
    elif isinstance(value, Mapping):
        for v in value.values():
            found |= references(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found |= references(v)
    return found


def evaluate(value: Any, scope: Mapping[str, Any]) -> Any:
    """``value`` with its expressions replaced by what they evaluate to in ``scope``."""
    if isinstance(value, str):
        whole = _PATTERN.fullmatch(value.strip())
        if whole is not None:
            return Expression(whole.group(1)).evaluate(scope)
        return _PATTERN.sub(lambda m: str(Expression(m.group(1)).evaluate(scope)), value)
    if isinstance(value, Mapping):
        return {k: evaluate(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v, scope) for v in value]
    return value


def condition(text: str) -> Expression:
    """A whole-string test such as ``"${transform.count} > 0"``: the ``${...}`` mark the
    references, and the text around them is part of the expression."""
    return Expression(_PATTERN.sub(lambda m: f"({m.group(1)})", text))


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Name):
        return {node.id}
    found: set[str] = set()
    for child in ast.iter_child_nodes(node):
        found |= _names(child)
    return found


def _eval(node: ast.AST, scope: Mapping[str, Any], source: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id not in scope:
            raise ExpressionError(f"${{{source}}}: nothing is named {node.id!r}")
        return scope[node.id]
    if isinstance(node, ast.Attribute):
        base = _eval(node.value, scope, source)
        if isinstance(base, Mapping) and node.attr in base:
            return base[node.attr]
        raise ExpressionError(f"${{{source}}}: {node.attr!r} is not a key of the value there")
    if isinstance(node, ast.Subscript):
        base = _eval(node.value, scope, source)
        key = _eval(node.slice, scope, source)
        try:
            return base[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise ExpressionError(f"${{{source}}}: no item {key!r} ({exc})") from None
    if isinstance(node, ast.BoolOp):  # Python's rules: the deciding operand, short-circuit
        value: Any = None
        for operand in node.values:
            value = _eval(operand, scope, source)
            if isinstance(node.op, ast.And) and not value:
                return value
            if isinstance(node.op, ast.Or) and value:
                return value
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, scope, source)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return +operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, scope, source), _eval(node.right, scope, source)
        if isinstance(node.op, ast.Mult) and (
            isinstance(left, (str, list)) or isinstance(right, (str, list))
        ):
            count = right if isinstance(left, (str, list)) else left
            if isinstance(count, int) and count > _MAX_REPEAT:
                raise ExpressionError(f"${{{source}}}: repeating {count} times is too many")
        try:
            return _BINARY[type(node.op)](left, right)
        except (TypeError, ArithmeticError) as exc:
            raise ExpressionError(f"${{{source}}}: {exc}") from None
    if isinstance(node, ast.Compare):
        left = _eval(node.left, scope, source)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, scope, source)
            try:
                holds = type(op) in _COMPARE and _COMPARE[type(op)](left, right)
            except TypeError as exc:
                raise ExpressionError(f"${{{source}}}: {exc}") from None
            if not holds:
                return False
            left = right
        return True
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, scope, source) for e in node.elts]
    raise ExpressionError(
        f"${{{source}}}: {type(node).__name__} is not allowed here (use names, fields, "
        "comparisons, and/or/not, arithmetic and literals)"
    )

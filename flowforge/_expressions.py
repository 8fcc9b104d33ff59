"""``${...}`` expressions in YAML/JSON definitions, evaluated safely.

An expression is parsed by :mod:`ast` and walked here; only these forms exist: names
(a task's result, ``params``, ``item`` in a mapped task, ``true``/``false``/``null``),
field access (``${extract.files}``: a key of a mapping), indexing with a literal
(``${rows[0]}``), comparisons, ``and``/``or``/``not``, arithmetic, literals and lists.
Nothing is ever passed to ``eval``. A string that is exactly one ``${...}`` gives the
expression's value; a string with text around expressions gives that text with each
value inserted.

A definition is not a memory bomb: what an expression would build is checked before it
is built. No value over ``MAX_BYTES`` (a repeated or joined string or list), no ``%``
format width or precision over ``MAX_WIDTH``, no nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "Expression", "ExpressionError", "check_constants", "condition", "evaluate", "find",
    "references",
]

_PATTERN = re.compile(r"\$\{([^}]*)\}")
_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False,
              "None": None}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


_MAX_REPEAT = 10**6  # "x" * n above this is refused: a definition is not a memory bomb
MAX_BYTES = 10 * 2**20  # the largest string (characters) an expression may build
_MAX_ITEMS = MAX_BYTES // 8  # ... and list (items of 8 bytes at least)
MAX_WIDTH = 10_000  # the widest "%...d"-style field
MAX_DEPTH = 100  # brackets, operators and calls nested in one expression
_FORMAT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated."""


class Expression:
    """One parsed ``${...}``: its source and the names it reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        _check_brackets(source)  # before the parser: deep nesting exhausts it
        try:
            self.tree = ast.parse(source.strip(), mode="eval").body
        except SyntaxError as exc:
            msg = f"${{{source}}} is not a valid expression ({exc.msg})"
            raise ExpressionError(msg) from None
        except (RecursionError, MemoryError):
            raise _too_deep(source) from None
        _check_depth(self.tree, source)
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


def check_constants(value: Any) -> None:
    """Evaluate every expression in ``value`` that reads no name (its value is known
    now), so a bad one is reported when the definition loads, not when its task runs."""
    if isinstance(value, str):
        for expr in find(value):
            if not expr.reads:
                expr.evaluate({})
    elif isinstance(value, Mapping):
        for v in value.values():
            check_constants(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_constants(v)


def condition(text: str) -> Expression:
    """A whole-string test such as ``"${transform.count} > 0"``: the ``${...}`` mark the
    references, and the text around them is part of the expression."""
    return Expression(_PATTERN.sub(lambda m: f"({m.group(1)})", text))


def _too_deep(source: str) -> ExpressionError:
    shown = source if len(source) <= 60 else source[:57] + "..."
    return ExpressionError(
        f"${{{shown}}} nests more than {MAX_DEPTH} levels deep; split it into smaller ones")


def _check_brackets(source: str) -> None:
    depth = 0
    for ch in source:
        if ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(source)
        elif ch in ")]}":
            depth -= 1


def _check_depth(tree: ast.AST, source: str) -> None:
    """Refuse a tree deeper than MAX_DEPTH (walked without recursion)."""
    todo = [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(source)
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_size(op: ast.operator, left: Any, right: Any, source: str) -> None:
    """Refuse a string or list the operation would make too large, before it is made."""
    size = None
    if isinstance(op, ast.Mult):
        seq, count = (left, right) if isinstance(left, (str, list)) else (right, left)
        if isinstance(seq, (str, list)) and isinstance(count, int):
            if count > _MAX_REPEAT:
                raise ExpressionError(f"${{{source}}}: repeating {count} times is too many")
            size = (len(seq), max(count, 0), seq)
    elif isinstance(op, ast.Add) and isinstance(left, (str, list)) and (
        type(left) is type(right)
    ):
        size = (len(left) + len(right), 1, left)
    elif isinstance(op, ast.Mod) and isinstance(left, str):
        for m in _FORMAT_FIELD.finditer(left):
            for value in m.groups():
                if value == "*" or (value is not None and int(value) > MAX_WIDTH):
                    raise ExpressionError(
                        f"${{{source}}}: a % field width or precision of {value} is over "
                        f"the limit of {MAX_WIDTH}")
    if size is not None:
        length, times, seq = size
        limit = MAX_BYTES if isinstance(seq, str) else _MAX_ITEMS
        if length * times > limit:
            what = "string" if isinstance(seq, str) else "list"
            raise ExpressionError(
                f"${{{source}}}: that would build a {what} of {length * times:,} "
                f"{'characters' if what == 'string' else 'items'}, over the limit of "
                f"{limit:,}")


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
        _check_size(node.op, left, right, source)
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

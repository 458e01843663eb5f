"""Safe condition expressions: ``metrics.auc >= 0.9 and outputs.rows > 100``.

Expressions are parsed with :mod:`ast` and only a small whitelist of node types is
evaluated (literals, names, attribute and item access on mappings, comparisons, boolean
and arithmetic operators, and ``len``/``min``/``max``/``abs``/``round``). No ``eval``
of arbitrary Python ever happens, so a flow file cannot run code through a condition.

Example:
    >>> expr = Expression.parse("metrics.auc >= 0.9 and status == 'success'")
    >>> expr.evaluate({"metrics": {"auc": 0.93}, "status": "success"})
    True
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
}
NAMES = ("metrics", "outputs", "status", "attempt", "iteration", "config")
"""The names an expression may use."""


class ExpressionError(ValueError):
    """An expression that is not allowed or cannot be evaluated."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked condition expression."""

    text: str
    tree: ast.Expression

    @classmethod
    def parse(cls, text: str, names: tuple[str, ...] = NAMES) -> Expression:
        """Parse and check ``text`` (raises :class:`ExpressionError` naming the problem).

        ``names`` are the top-level names the expression may use (the trigger service
        passes ``("event",)``).
        """
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
        for node in ast.walk(tree):
            _check(node, text, names)
        return cls(text, tree)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """Evaluate over ``scope``; a missing metric or output is an ExpressionError."""
        return _eval(self.tree.body, scope, self.text)


_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Compare,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Call,
    ast.List,
    ast.Tuple,
    *_BINOPS,
    *_CMPOPS,
)


def _check(node: ast.AST, text: str, names: tuple[str, ...] = NAMES) -> None:
    if not isinstance(node, _ALLOWED):
        raise ExpressionError(f"'{type(node).__name__}' is not allowed in expression {text!r}")
    if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCS:
        raise ExpressionError(
            f"unknown name '{node.id}' in expression {text!r}; use one of {', '.join(names)}"
        )
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        raise ExpressionError(f"private attribute '{node.attr}' in expression {text!r}")
    if isinstance(node, ast.Call) and not (
        isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords
    ):
        raise ExpressionError(f"only {', '.join(_FUNCS)} may be called in expression {text!r}")


def _lookup(container: Any, key: Any, text: str) -> Any:
    if isinstance(container, Mapping):
        if key not in container:
            known = ", ".join(sorted(map(str, container))) or "none"
            raise ExpressionError(f"'{key}' is not available in {text!r} (available: {known})")
        return container[key]
    if isinstance(container, list | tuple) and isinstance(key, int):
        return container[key]
    raise ExpressionError(f"cannot look up '{key}' in a {type(container).__name__} in {text!r}")


def _eval(node: ast.AST, scope: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _FUNCS:
            return _FUNCS[node.id]
        return _lookup(scope, node.id, text)
    if isinstance(node, ast.Attribute):
        return _lookup(_eval(node.value, scope, text), node.attr, text)
    if isinstance(node, ast.Subscript):
        return _lookup(_eval(node.value, scope, text), _eval(node.slice, scope, text), text)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for v in node.values:
                result = _eval(v, scope, text)
                if not result:
                    return result
            return result
        result = False
        for v in node.values:
            result = _eval(v, scope, text)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        val = _eval(node.operand, scope, text)
        if isinstance(node.op, ast.Not):
            return not val
        return -val if isinstance(node.op, ast.USub) else +val
    try:
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](
                _eval(node.left, scope, text), _eval(node.right, scope, text)
            )
        if isinstance(node, ast.Compare):
            left = _eval(node.left, scope, text)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = _eval(comp, scope, text)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Call):
            fn = _eval(node.func, scope, text)
            return fn(*[_eval(a, scope, text) for a in node.args])
    except ExpressionError:
        raise
    except Exception as exc:
        raise ExpressionError(f"cannot evaluate {text!r}: {exc}") from None
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, scope, text) for e in node.elts]
    raise ExpressionError(f"cannot evaluate {text!r}")

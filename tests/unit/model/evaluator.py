"""A small evaluator of the ConditionExpressions the ConditionBuilder emits, on a model item.

The subset: ``attribute_exists(#n)``, ``attribute_not_exists(#n)``, comparisons (``= <> < <= > >=``)
between ``#names`` and ``:values``, ``AND``/``OR``/``NOT`` and parentheses. Semantics as DynamoDB's:
a comparison involving a missing attribute, or values of different types, is false; numbers compare
by value, strings by code point.
"""

from __future__ import annotations

import decimal
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKEN = re.compile(r"\s*(<>|<=|>=|[()=<>,]|[#:][A-Za-z0-9_]+|[A-Za-z_]+)")

Item = Mapping[str, Mapping[str, Any]]
Predicate = Callable[[Item | None], bool]


class ConditionSyntaxError(ValueError):
    """The expression is outside the subset this evaluator knows."""


def _tokens(expression: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(expression):
        if expression[pos:].isspace():
            break
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise ConditionSyntaxError(f"unexpected text at {pos}: {expression[pos:]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def _scalar(value: Mapping[str, Any]) -> tuple[str, Any]:
    ((type_, inner),) = value.items()
    if type_ == "N":
        return "N", decimal.Decimal(inner)
    return type_, inner


def _compare(op: str, left: Mapping[str, Any] | None, right: Mapping[str, Any] | None) -> bool:
    if left is None or right is None:
        return False
    (lt, lv), (rt, rv) = _scalar(left), _scalar(right)
    if lt != rt:
        return op == "<>"
    if op in ("=", "<>"):
        return (lv == rv) == (op == "=")
    if lt not in ("N", "S", "B"):
        return False
    return {"<": lv < rv, "<=": lv <= rv, ">": lv > rv, ">=": lv >= rv}[op]


class _Parser:
    def __init__(self, tokens: list[str], names: Mapping[str, str], values: Mapping[str, Any]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.names = names
        self.values = values

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, want: str | None = None) -> str:
        token = self.peek()
        if token is None or (want is not None and token.upper() != want):
            raise ConditionSyntaxError(f"expected {want or 'a token'}, got {token!r}")
        self.pos += 1
        return token

    def parse(self) -> Predicate:
        pred = self.or_()
        if self.peek() is not None:
            raise ConditionSyntaxError(f"trailing {self.peek()!r}")
        return pred

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while (self.peek() or "").upper() == "OR":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda item: any(p(item) for p in parts))

    def and_(self) -> Predicate:
        parts = [self.not_()]
        while (self.peek() or "").upper() == "AND":
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else (lambda item: all(p(item) for p in parts))

    def not_(self) -> Predicate:
        if (self.peek() or "").upper() == "NOT":
            self.take()
            inner = self.not_()
            return lambda item: not inner(item)
        return self.primary()

    def operand(self) -> Callable[[Item | None], Mapping[str, Any] | None]:
        token = self.take()
        if token.startswith("#"):
            name = self.names[token]
            return lambda item: None if item is None else item.get(name)
        if token.startswith(":"):
            value = self.values[token]
            return lambda _item: value
        raise ConditionSyntaxError(f"expected #name or :value, got {token!r}")

    def primary(self) -> Predicate:
        token = self.peek()
        if token == "(":  # noqa: S105 - a parser token, not a secret
            self.take()
            inner = self.or_()
            self.take(")")
            return inner
        if token in ("attribute_exists", "attribute_not_exists"):
            self.take()
            self.take("(")
            name_token = self.take()
            self.take(")")
            name = self.names[name_token]
            exists = token == "attribute_exists"  # noqa: S105 - same
            return lambda item: (item is not None and name in item) == exists
        left = self.operand()
        op = self.take()
        if op not in ("=", "<>", "<", "<=", ">", ">="):
            raise ConditionSyntaxError(f"expected a comparison, got {op!r}")
        right = self.operand()
        return lambda item: _compare(op, left(item), right(item))


def compile_condition(expression: str, names: Mapping[str, str], values: Mapping[str, Any]) -> Predicate:
    """Parse ``expression`` once; the result says whether a (possibly absent) item satisfies it."""
    return _Parser(_tokens(expression), names, values).parse()


def holds(expression: str, names: Mapping[str, str], values: Mapping[str, Any], item: Item | None) -> bool:
    """Whether ``item`` (None: no item) satisfies the condition."""
    frozen_values = tuple((k, tuple(v.items())) for k, v in sorted(values.items()))
    return _compiled(expression, tuple(sorted(names.items())), frozen_values)(item)


@functools.lru_cache(maxsize=4096)
def _compiled(
    expression: str, names: tuple[tuple[str, str], ...], values: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
) -> Predicate:
    # The explorer evaluates the same few requests on many states: parse each once.
    return compile_condition(expression, dict(names), {k: dict(v) for k, v in values})

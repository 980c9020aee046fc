"""A safe arithmetic evaluator for gold equations and model-written answers. Never ``eval``.

Grammar: numbers, + - * /, unary signs, parentheses and bounded powers (``^`` or ``**``).
Anything else -- names, calls, attributes, strings -- is a ValueError, so model output such as
``__import__('os').system('...')`` is an unparseable answer, never code.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\*\*|[-+*/^()]))")
MAX_EXPONENT = 64
MAX_LENGTH = 512


def _tokenize(expr: str) -> list[str]:
    tokens, pos = [], 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"unexpected character {expr[pos:].strip()[:1]!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of expression")
        self.i += 1
        return tok

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> float:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.unary()
            if op == "*":
                value *= rhs
            elif rhs == 0:
                raise ValueError("division by zero")
            else:
                value /= rhs
        return value

    def unary(self) -> float:
        if self.peek() in ("+", "-"):
            sign = -1.0 if self.take() == "-" else 1.0
            return sign * self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() in ("^", "**"):
            self.take()
            exponent = self.unary()  # right-associative
            if abs(exponent) > MAX_EXPONENT or abs(base) > 1e12:
                raise ValueError("power out of bounds")
            return float(base**exponent)
        return base

    def atom(self) -> float:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if tok[0].isdigit() or tok[0] == ".":
            return float(tok)
        raise ValueError(f"unexpected token {tok!r}")


def safe_eval(expr: str) -> float:
    """Value of an arithmetic expression, or ValueError for anything that is not one."""
    if len(expr) > MAX_LENGTH:
        raise ValueError("expression too long")
    parser = _Parser(_tokenize(expr))
    if not parser.tokens:
        raise ValueError("empty expression")
    try:
        value = parser.expr()
    except RecursionError:
        raise ValueError("expression nested too deeply") from None
    if parser.peek() is not None:
        raise ValueError(f"unexpected token {parser.peek()!r}")
    if isinstance(value, complex) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite real number")
    return value

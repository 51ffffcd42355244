"""Countdown arithmetic: the allowed operations, a safe expression parser, the verifier and an exhaustive solver.

The rules (the ones every problem, trace and answer here obeys):

* operations: `a + b`, `a * b`, `a - b` only when `a > b` (larger minus smaller, so never 0 or negative) and
  `a / b` only when `b` divides `a` exactly;
* every intermediate value is a positive integer;
* an answer uses each given number exactly once (a multiset: a number given twice is used twice).

Answers are parsed by a small recursive-descent parser over numbers, `+ - * /` (and their usual look-alikes such as
`x`, `\\times`, `\\div`), and parentheses. Nothing is ever passed to `eval`: anything else is a parse error.
Evaluation follows the usual precedence, left to right, so `50 - 60 + 20` has the negative intermediate `50 - 60`
and is rejected even though its value is 10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

OPS = ("+", "-", "*", "/")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class ExpressionError(ValueError):
    """An answer expression could not be parsed; the message names the character position."""


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Expr"
    right: "Expr"


Expr = Union[Num, BinOp]


def apply_op(a: int, op: str, b: int) -> int | None:
    """`a op b` under Countdown rules (operand order as written), or None when the rules forbid it."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    if op == "/":
        return a // b if b > 0 and a % b == 0 else None
    raise ValueError(f"unknown operation {op!r}")


# ---------------------------------------------------------------------------------------------- parsing
# Look-alikes models and people write for the four operations. Longest first, so `\times` wins over `x`.
_OP_ALIASES = [("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"), ("∗", "*"), ("÷", "/"),
               ("−", "-"), ("–", "-"), ("x", "*"), ("X", "*"), ("+", "+"), ("-", "-"), ("*", "*"), ("/", "/")]
_OPEN = {"(": ")", "[": "]", "\\left(": "\\right)", "{": "}"}
#: Longest answer parsed, in tokens (numbers, operators, brackets). A real answer has at most 4 numbers and a few
#: brackets; the limit keeps the recursive parser and evaluator far from Python's recursion limit on a model's
#: runaway output (thousands of nested brackets once crashed the grading with RecursionError).
MAX_TOKENS = 200
_TOKEN_RE = re.compile(r"\s+|\d+|\\left\(|\\right\)|\\times|\\cdot|\\div|[()\[\]{}+\-*/x×·∗÷−–X]")


def _tokens(text: str) -> list[tuple[str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r} at position {pos}")
        tok = m.group(0)
        if not tok.isspace():
            out.append((tok, pos))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.k = 0

    def peek(self) -> tuple[str, int] | None:
        return self.toks[self.k] if self.k < len(self.toks) else None

    def op(self, level: int) -> str | None:
        t = self.peek()
        if t is None:
            return None
        for alias, op in _OP_ALIASES:
            if t[0] == alias and _PRECEDENCE[op] == level:
                return op
        return None

    def expr(self, level: int = 1) -> Expr:
        if level > 2:
            return self.atom()
        left = self.expr(level + 1)
        while (op := self.op(level)) is not None:
            self.k += 1
            left = BinOp(op, left, self.expr(level + 1))
        return left

    def atom(self) -> Expr:
        t = self.peek()
        if t is None:
            raise ExpressionError(f"expression ends early at position {len(self.text)}")
        tok, pos = t
        if tok.isdigit():
            self.k += 1
            return Num(int(tok))
        if tok in _OPEN:
            self.k += 1
            inner = self.expr()
            close = self.peek()
            if close is None or close[0] != _OPEN[tok]:
                where = close[1] if close else len(self.text)
                raise ExpressionError(f"missing {_OPEN[tok]!r} for {tok!r} at position {pos} (at {where})")
            self.k += 1
            return inner
        raise ExpressionError(f"unexpected {tok!r} at position {pos}")


def parse_expression(text: str) -> Expr:
    """Parse an answer expression. Raises `ExpressionError` naming the position of the first problem."""
    p = _Parser(text)
    if not p.toks:
        raise ExpressionError("empty expression")
    if len(p.toks) > MAX_TOKENS:
        raise ExpressionError(f"expression has {len(p.toks)} tokens; an answer has at most {MAX_TOKENS}")
    e = p.expr()
    if p.peek() is not None:
        tok, pos = p.peek()
        raise ExpressionError(f"unexpected {tok!r} at position {pos}")
    return e


def leaves(e: Expr) -> list[int]:
    """The numbers an expression uses, left to right."""
    if isinstance(e, Num):
        return [e.value]
    return leaves(e.left) + leaves(e.right)


def evaluate(e: Expr) -> int:
    """The value of an expression under Countdown rules; raises `ValueError` naming the first illegal step."""
    if isinstance(e, Num):
        if e.value <= 0:
            raise ValueError(f"number {e.value} is not positive")
        return e.value
    a, b = evaluate(e.left), evaluate(e.right)
    r = apply_op(a, e.op, b)
    if r is None:
        if e.op == "-":
            raise ValueError(f"{a} - {b} is not positive")
        raise ValueError(f"{a} / {b} is not an exact division")
    return r


def to_text(e: Expr, parent_prec: int = 0, right: bool = False) -> str:
    """Infix text with only the parentheses the rules need (`-` and `/` are not associative)."""
    if isinstance(e, Num):
        return str(e.value)
    prec = _PRECEDENCE[e.op]
    s = f"{to_text(e.left, prec)}{e.op}{to_text(e.right, prec, right=e.op in '-/')}"
    if prec < parent_prec or (right and prec == parent_prec):
        return f"({s})"
    return s


# ---------------------------------------------------------------------------------------------- verifier
@dataclass(frozen=True)
class Verdict:
    """The verifier's answer: `ok`, and when not ok a short reason."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _answer_side(text: str, target: int) -> str:
    """The expression side of `expr`, `expr = T` or `T = expr` (a wrong right-hand side is an error)."""
    sides = [s.strip() for s in text.split("=")]
    if len(sides) == 1:
        return sides[0]
    if len(sides) == 2:
        for expr_side, other in ((sides[0], sides[1]), (sides[1], sides[0])):
            if other.isdigit():
                if int(other) != target:
                    raise ExpressionError(f"the answer claims {other}, the target is {target}")
                return expr_side
    raise ExpressionError("an answer has at most one '=' with the target on one side")


def check_answer(text: str, numbers: Sequence[int], target: int) -> Verdict:
    """Whether `text` is a valid Countdown answer: uses each of `numbers` exactly once, only allowed operations,
    positive integer intermediates, and equals `target`. Never raises on bad answers (a reason is returned)."""
    try:
        e = parse_expression(_answer_side(text, target))
    except ExpressionError as err:
        return Verdict(False, f"unparsable: {err}")
    used = sorted(leaves(e))
    if used != sorted(numbers):
        return Verdict(False, f"uses {used}, must use each of {sorted(numbers)} exactly once")
    try:
        value = evaluate(e)
    except ValueError as err:
        return Verdict(False, str(err))
    if value != target:
        return Verdict(False, f"equals {value}, not {target}")
    return Verdict(True)


# ---------------------------------------------------------------------------------------------- solver
def _combine(a: tuple[int, Expr], b: tuple[int, Expr]) -> Iterator[tuple[int, Expr]]:
    """Every legal way to combine two values (each unordered pair once; `-` and `/` larger first)."""
    (x, ex), (y, ey) = (a, b) if a[0] >= b[0] else (b, a)
    yield x + y, BinOp("+", ex, ey)
    yield x * y, BinOp("*", ex, ey)
    if x > y:
        yield x - y, BinOp("-", ex, ey)
    if y > 0 and x % y == 0:
        yield x // y, BinOp("/", ex, ey)


def _solve(items: list[tuple[int, Expr]], target: int) -> Iterator[Expr]:
    if len(items) == 1:
        if items[0][0] == target:
            yield items[0][1]
        return
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            rest = [items[k] for k in range(len(items)) if k != i and k != j]
            for v, e in _combine(items[i], items[j]):
                yield from _solve(rest + [(v, e)], target)


def iter_solutions(numbers: Sequence[int], target: int) -> Iterator[str]:
    """Every solution expression (as minimal-parentheses text), each distinct text once, in search order."""
    if not numbers:
        raise ValueError("numbers must not be empty")
    seen: set[str] = set()
    for e in _solve([(n, Num(n)) for n in numbers], target):
        s = to_text(e)
        if s not in seen:
            seen.add(s)
            yield s


def solutions(numbers: Sequence[int], target: int) -> list[str]:
    """All solutions of a problem (see `iter_solutions`)."""
    return list(iter_solutions(numbers, target))


def first_solution(numbers: Sequence[int], target: int) -> str | None:
    """One solution, or None when the problem has none."""
    return next(iter_solutions(numbers, target), None)

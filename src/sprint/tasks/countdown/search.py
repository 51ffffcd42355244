"""The one search behind both trace formats: a depth-first search over first moves in a fixed order.

The search, for a problem with numbers sorted largest first:

1. **Moves.** List the legal first moves (pairs in order, operations `+ - * /`) in one of two orders (`ORDERS`):
   * `canonical` (the default; the bundled data and models use it): the list order itself, i.e. numbers as the state lists them (largest first), pairs (i, j) with
     i < j in order (a b, a c, a d, b c, b d, c d), operations `+ - * /`, skipping the illegal ones (pruning rules
     below), and skipping a move whose resulting state (as values) equals an earlier move's (exploring it would
     write the same branch again). A model can write this list without arithmetic lookahead: the heuristic order
     needs every candidate result computed and sorted before the first "Explore" line, which small models cannot
     do (they repeat the likeliest move).
   * `heuristic`: best first by the distance of the move's result to the target, ties in list order.
   Only the first `max_branches` are kept.
2. **Branches.** Explore the moves in that order. Exploring a move means: for each legal second move on the three
   remaining numbers (pairs in order, operations `+ - * /`, a pair equal to an earlier pair skipped), write the pair
   that remains and every legal result of combining it; stop at the first result equal to the target. A branch that
   has no such result is a dead end; the search goes on with the next move, and stops at the first solution.

Pruning rules (the same in generation, so every generated problem is solvable within them): values above
`max_value` are never written, subtraction is larger minus smaller and never gives 0, division is exact and never
by 1 (it would only repeat `* 1`).

Text (compact and regular so a small model can learn it; numbers in a state are sorted largest first; a real
trace, problem [17, 18, 51, 1] -> 16):

    Reach 16 from [51 18 17 1]            <- intro: the state and the target
    Explore 17-1=16                       <- a branch: the first move (in this example: best first by the heuristic)
    [51 18 16]                            <- the state it leaves
    51+18=69 [69 16] 85 53                <- a second move, the pair it leaves, the pair's results (+ - * /)
    51-18=33 [33 16] 49 17 528
    ...
    Dead end
    Explore 18-1=17
    ...
    Explore 17*1=17
    [51 18 17]
    51+18=69 [69 17] 86 52
    51-18=33 [33 17] 50 16                <- results in operation order, up to the target
    33-17=16                              <- the hit as one operation
    Solution (51-18)-(17*1)               <- the whole expression (operands of inner moves parenthesised)

There is no list of moves up front: every such line would sit on the critical path of both formats, and the
"Explore" lines (the SPRINT prompts) already are that list, in search order. Inside a branch the order is
canonical for both orders (second moves and results in list order, no ranking), so only the first moves differ.

A branch is one `Step` of the curation module: its prompt is the "Explore" line, its execution the lines under it
(starting with the state).
Branches depend only on the intro (they are independent of each other); the answer depends on the branch that
found the solution. The sequential trace is the text above in order, up to the solution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sprint.tasks.countdown.problems import DEFAULT_MAX_VALUE, Problem

DEFAULT_MAX_BRANCHES = 16
#: Opens a branch: its first move ("Explore 17-1=16"; the SPRINT prompt).
BRANCH_PREFIX = "Explore "
#: Opens the line that states a branch's solution (and ends the search).
SOLUTION_PREFIX = "Solution "
#: The line that closes a branch without a solution.
DEAD_END = "Dead end"
#: How a branch writes the check of a last pair's results against the target (`trace.check`; `pair_line`):
#: "none" lists the results, "distance" writes each with its distance to the target, "target" restates the target
#: before the results, "compare" restates it and marks each result <, > or = against it. The first is the default.
CHECKS = ("none", "distance", "target", "compare")
DEFAULT_CHECK = CHECKS[0]
#: How a Solution line writes the digits of its expression (`trace.solution_digits`; `solution_text`): "plain"
#: (`Solution (83+22)/(18-15)`) or "superscript" (`Solution (⁸³+²²)/(¹⁸-¹⁵)`); "superscript_whole" writes the same
#: text and makes the tokenizer give each superscript number one token. The first is the default.
SOLUTION_DIGITS = ("plain", "superscript", "superscript_whole")
DEFAULT_SOLUTION_DIGITS = SOLUTION_DIGITS[0]
#: The characters `solution_digits="superscript"` writes (the Countdown tokenizer gives each its own token then).
SUPERSCRIPT_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_SUPERSCRIPT = str.maketrans("0123456789", SUPERSCRIPT_DIGITS)
_PLAIN = str.maketrans(SUPERSCRIPT_DIGITS, "0123456789")
#: Orders of the first moves (see the module docstring); the first is the default.
ORDERS = ("canonical", "heuristic")
DEFAULT_ORDER = ORDERS[0]


def solution_lines(text: str) -> list[str]:
    """The expressions of the `Solution ...` lines of a text (a model's trace), in order, with plain digits (a
    superscript digit, `solution_digits="superscript"`, reads as its plain digit)."""
    return [ln[len(SOLUTION_PREFIX):].strip().translate(_PLAIN) for ln in text.splitlines()
            if ln.startswith(SOLUTION_PREFIX)]


def solution_text(expr: str, digits: str = DEFAULT_SOLUTION_DIGITS) -> str:
    """An expression as a Solution line writes it, with the digits of `digits` (`SOLUTION_DIGITS`).

    Why superscripts: the SPRINT planner must copy an execution's Solution expression from far back, and with plain
    digits every digit pair of it also occurs in the pair lines of every execution (`83+22=105`), so a copy that
    looks for "what came after this token last time" is led astray (the bundled models compose a wrong expression
    instead, docs/countdown.md). Superscript digits occur in Solution lines only. The boxed answer keeps plain digits.
    """
    return expr.translate(_SUPERSCRIPT) if check_solution_digits(digits) != "plain" else expr


def check_solution_digits(digits: str) -> str:
    if digits not in SOLUTION_DIGITS:
        raise ValueError(f"trace.solution_digits must be one of {', '.join(SOLUTION_DIGITS)}, got {digits!r}")
    return digits


def check_check(check: str) -> str:
    if check not in CHECKS:
        raise ValueError(f"trace.check must be one of {', '.join(CHECKS)}, got {check!r}")
    return check


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"trace.order must be one of {', '.join(ORDERS)}, got {order!r}")
    return order


@dataclass(frozen=True)
class Move:
    """`a op b = result`, with `a >= b`, and the expressions the operands stand for."""

    a: int
    op: str
    b: int
    result: int
    expr_a: str
    expr_b: str

    @property
    def text(self) -> str:
        return f"{self.a}{self.op}{self.b}={self.result}"

    @property
    def expr(self) -> str:
        return f"({self.expr_a}{self.op}{self.expr_b})"


def results(a: int, b: int, max_value: int) -> list[tuple[str, int]]:
    """The legal (operation, result) of a pair with a >= b, in operation order (the pruning rules above)."""
    out = []
    if a + b <= max_value:
        out.append(("+", a + b))
    if a > b:
        out.append(("-", a - b))
    if a * b <= max_value:
        out.append(("*", a * b))
    if b > 1 and a % b == 0:
        out.append(("/", a // b))
    return out


def moves(state: Sequence[tuple[int, str]], max_value: int) -> list[tuple[Move, list[tuple[int, str]]]]:
    """Every legal move on a state (value, expression) sorted largest first, in canonical order, with the state
    each leaves (sorted largest first). A pair of values equal to an earlier pair is skipped."""
    out = []
    seen: set[tuple[int, int]] = set()
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            (a, ea), (b, eb) = state[i], state[j]
            if (a, b) in seen:
                continue
            seen.add((a, b))
            rest = [state[k] for k in range(len(state)) if k != i and k != j]
            for op, r in results(a, b, max_value):
                m = Move(a, op, b, r, ea, eb)
                out.append((m, sort_state(rest + [(r, m.expr)])))
    return out


def sort_state(state: list[tuple[int, str]]) -> list[tuple[int, str]]:
    # Stable sort: equal values keep their order, so the text never depends on anything but the values.
    return sorted(state, key=lambda x: -x[0])


def state_text(state: Sequence[tuple[int, str]]) -> str:
    return "[" + " ".join(str(v) for v, _ in state) + "]"


@dataclass
class Branch:
    """One explored first move: its prompt line ("Explore ..."), the lines under it, and the solution if found."""

    move: Move
    state: list[tuple[int, str]]
    lines: list[str] = field(default_factory=list)
    solution: str | None = None

    @property
    def prompt(self) -> str:
        return f"{BRANCH_PREFIX}{self.move.text}"

    @property
    def execution(self) -> str:
        return "\n".join(self.lines)

    @property
    def solved(self) -> bool:
        return self.solution is not None


def pair_line(move_text: str, x: int, y: int, found: list[int], target: int, check: str = DEFAULT_CHECK) -> str:
    """A second move's line: the move, the pair it leaves and the pair's results (`found`, up to the hit), with the
    check of `check` (`CHECKS`); for target 16: "none" `51-18=33 [33 17] 50 16`, "distance" `... [33 17] 50:34 16:0`,
    "target" `... [33 17] 16: 50 16`, "compare" `... [33 17] 16: 50> 16=`."""
    if check == "distance":
        res = [f"{r}:{abs(r - target)}" for r in found]
    elif check == "compare":
        res = [f"{r}{'=' if r == target else '>' if r > target else '<'}" for r in found]
    else:
        res = [str(r) for r in found]
    if check in ("target", "compare"):
        res.insert(0, f"{target}:")
    return f"{move_text} [{x} {y}]" + "".join(" " + t for t in res)


def explore(move: Move, state: list[tuple[int, str]], target: int, max_value: int,
            check: str = DEFAULT_CHECK, solution_digits: str = DEFAULT_SOLUTION_DIGITS) -> Branch:
    """Depth-first search under one first move (three numbers left), stopping at the first solution.

    Written out flat (not with `moves`) because it is the inner loop of data generation; same order and rules.
    """
    if len(state) != 3:
        raise ValueError(f"explore expects a state of 3 numbers, got {state_text(state)}")
    br = Branch(move, state, [state_text(state)])
    lines = br.lines
    seen: set[tuple[int, int]] = set()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        a, b = state[i][0], state[j][0]
        if (a, b) in seen:
            continue
        seen.add((a, b))
        other = state[3 - i - j]
        for op, r in results(a, b, max_value):
            x, y = (r, other[0]) if r >= other[0] else (other[0], r)
            found = None
            leaf = []
            for op2, r2 in results(x, y, max_value):
                leaf.append(r2)
                if r2 == target:
                    found = op2
                    break
            lines.append(pair_line(f"{a}{op}{b}={r}", x, y, leaf, target, check))
            if found is not None:
                # The hit written out as one operation: the stop is then checked against a line that ends in the
                # target, and the Solution line's last operation is on the line above it, not implied by the
                # position of a result in the list.
                lines.append(f"{x}{found}{y}={target}")
                inner = f"({state[i][1]}{op}{state[j][1]})"
                ex, ey = (inner, other[1]) if r >= other[0] else (other[1], inner)
                br.solution = f"{ex}{found}{ey}"
                lines.append(SOLUTION_PREFIX + solution_text(br.solution, solution_digits))
                return br
    lines.append(DEAD_END)
    return br


@dataclass
class Search:
    """The whole search of one problem: intro lines, the first moves in search order (`ranked`, whichever the
    order), and the branches explored."""

    problem: Problem
    intro: str
    ranked: list[tuple[Move, list[tuple[int, str]]]]
    branches: list[Branch]
    max_branches: int
    max_value: int
    order: str = DEFAULT_ORDER
    check: str = DEFAULT_CHECK
    solution_digits: str = DEFAULT_SOLUTION_DIGITS

    @property
    def solved_at(self) -> int | None:
        """1-based index of the first branch that found a solution (None: unsolved within `max_branches`)."""
        for k, b in enumerate(self.branches, start=1):
            if b.solved:
                return k
        return None

    @property
    def solution(self) -> str | None:
        k = self.solved_at
        return self.branches[k - 1].solution if k else None

    def branch(self, k: int) -> Branch:
        """Branch k (1-based), explored on demand (the SPRINT trace explores a whole stage's worth)."""
        while len(self.branches) < k:
            m, st = self.ranked[len(self.branches)]
            self.branches.append(explore(m, st, self.problem.target, self.max_value, self.check,
                                         self.solution_digits))
        return self.branches[k - 1]

    def sequential_text(self) -> str:
        """The search as one text, in order, up to and including the solution (or all branches if unsolved)."""
        parts = [self.intro]
        k = self.solved_at or len(self.branches)
        for b in self.branches[:k]:
            parts.append(b.prompt)
            parts.append(b.execution)
        return "\n".join(parts)


def first_moves(start: Sequence[tuple[int, str]], target: int, max_value: int,
                order: str = DEFAULT_ORDER) -> list[tuple[Move, list[tuple[int, str]]]]:
    """Every first move on a state sorted largest first, with the state it leaves, in the search order `order`."""
    check_order(order)
    first = moves(start, max_value)
    if order == "heuristic":
        # Closest result to the target first; `sorted` is stable, so ties keep canonical order.
        return sorted(first, key=lambda ms: abs(ms[0].result - target))
    out, seen = [], set()
    for m, st in first:
        values = tuple(v for v, _ in st)  # states are sorted, so equal multisets give equal tuples
        if values not in seen:
            seen.add(values)
            out.append((m, st))
    return out


def intro_text(problem: Problem) -> str:
    """The trace's first line: the target and the numbers sorted ("Reach 16 from [51 18 17 1]"). A model that
    writes it wrong has changed the problem (the SPRINT evaluation counts these runs, `ablate_table.py`)."""
    return f"Reach {problem.target} from {state_text(sort_state([(n, str(n)) for n in problem.numbers]))}"


def search(problem: Problem, max_branches: int = DEFAULT_MAX_BRANCHES,
           max_value: int = DEFAULT_MAX_VALUE, order: str = DEFAULT_ORDER, check: str = DEFAULT_CHECK,
           solution_digits: str = DEFAULT_SOLUTION_DIGITS) -> Search:
    """Run the depth-first search on a problem (stopping at the first solution), first moves in `order`, the
    results of last pairs written with the check `check` (`pair_line`) and Solution lines with `solution_digits`
    (`solution_text`; the search itself is the same)."""
    check_check(check)
    check_solution_digits(solution_digits)
    if len(problem.numbers) != 4:
        raise ValueError(f"the search traces are defined for 4 numbers, got {list(problem.numbers)}")
    start = sort_state([(n, str(n)) for n in problem.numbers])
    target = problem.target
    ranked = first_moves(start, target, max_value, order)[:max_branches]
    s = Search(problem, intro_text(problem), ranked, [], max_branches, max_value, order, check, solution_digits)
    for k in range(1, len(ranked) + 1):
        if s.branch(k).solved:
            break
    return s

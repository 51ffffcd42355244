"""Countdown problems: the record, seeded generation, the train / validation / test splits, and question text.

A problem is 4 numbers in 1..99 and a target in 10..100 that some expression of the numbers reaches under the rules
of `sprint.tasks.countdown.expr`. Generation is by construction: draw the numbers, combine them with random legal
operations (every intermediate a positive integer of at most `max_value`), and take the result as the target when it
lies in the allowed range; so every problem has at least one solution, recorded in `Problem.construction`.

Splits (the rule that keeps evaluation honest, for every seed):

* 10% of the targets are held out of training: `HELDOUT_TARGETS`, one target drawn from each decade 10-19, ...,
  90-100 with the fixed seed `TARGET_SPLIT_SEED` (9 of the 91 targets). They are a constant of the task, not of a
  data config, so a model trained on any generated data set and a test set generated with any seed agree on them.
* `test`: only held-out targets. No training problem can ever equal a test problem.
* `train` and `val`: the other targets, split by a hash of the problem (its sorted numbers and target): a problem
  whose SHA-256 bucket (0..99) is below `VAL_PERCENT` is a validation problem, any other a training problem. So
  validation problems are unseen problems with seen targets, again for every seed.

Difficulty: with `difficulty="multiplicative"` (the default) a problem is kept only when no solution uses `+` and `-`
alone (no signed sum of the numbers equals the target), so a solution needs `*` or `/`. About 80% of constructed
problems have an additive solution, and those are found by almost any first move (a+b+c-d can start from six
different pairs), which leaves nothing to search and nothing to parallelise. `difficulty="any"` keeps every
solvable problem.

Each split draws from its own random stream (seeded by split name and seed), so asking for more training problems
never changes the test problems.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

from sprint.tasks.countdown.expr import BinOp, Expr, Num, to_text

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

NUM_COUNT = 4
NUMBER_RANGE = (1, 99)
TARGET_RANGE = (10, 100)
#: Intermediate values above this are pruned in generation and in the search (their tokens would be rare).
DEFAULT_MAX_VALUE = 1000
TARGET_SPLIT_SEED = 20250611
VAL_PERCENT = 5
DIFFICULTIES = ("multiplicative", "any")
DEFAULT_DIFFICULTY = "multiplicative"


def _heldout_targets(seed: int = TARGET_SPLIT_SEED) -> frozenset[int]:
    rng = random.Random(seed)
    lo, hi = TARGET_RANGE
    out = []
    for start in range(lo, hi, 10):
        end = hi if start + 10 > hi - 1 else start + 9  # the last decade takes 100 with it
        out.append(rng.randint(start, end))
    return frozenset(out)


#: The targets no training problem uses (10% of the 91 targets, one per decade).
HELDOUT_TARGETS: frozenset[int] = _heldout_targets()
ALL_TARGETS: tuple[int, ...] = tuple(range(TARGET_RANGE[0], TARGET_RANGE[1] + 1))
TRAIN_TARGETS: frozenset[int] = frozenset(t for t in ALL_TARGETS if t not in HELDOUT_TARGETS)


@functools.lru_cache(maxsize=None)
def train_targets(train_target_max: int = TARGET_RANGE[1]) -> frozenset[int]:
    """The targets training and validation problems may have: `TRAIN_TARGETS`, plus 101..`train_target_max` (see
    `split_of`)."""
    return TRAIN_TARGETS | frozenset(range(TARGET_RANGE[1] + 1, train_target_max + 1))


@dataclass(frozen=True)
class Problem:
    """A Countdown problem: reach `target` from `numbers` (each used once). `construction` is a known solution."""

    numbers: tuple[int, ...]
    target: int
    construction: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if len(self.numbers) < 2:
            raise ValueError(f"a problem needs at least 2 numbers, got {list(self.numbers)}")
        if any(n <= 0 for n in self.numbers):
            raise ValueError(f"numbers must be positive integers, got {list(self.numbers)}")
        if self.target <= 0:
            raise ValueError(f"target must be a positive integer, got {self.target}")

    @property
    def key(self) -> str:
        """Identity of the problem regardless of number order: "7,12,23,45=61"."""
        return ",".join(map(str, sorted(self.numbers))) + f"={self.target}"

    @property
    def question(self) -> str:
        return render_question(self)

    def to_json(self) -> dict:
        return {"numbers": list(self.numbers), "target": self.target, "construction": self.construction}

    @classmethod
    def from_json(cls, d: dict, where: str = "problem") -> "Problem":
        try:
            return cls(tuple(int(n) for n in d["numbers"]), int(d["target"]), d.get("construction"))
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e.args[0]!r}") from None


def bucket(problem: Problem) -> int:
    """The problem's hash bucket in 0..99 (decides train vs validation; independent of number order)."""
    return int.from_bytes(hashlib.sha256(problem.key.encode()).digest()[:8], "big") % 100


def has_additive_solution(numbers: Sequence[int], target: int) -> bool:
    """Whether `+` and `-` alone reach the target (some signed sum of all the numbers equals it; adding the
    positive terms first keeps every intermediate positive, so the signed sum is enough)."""
    return any(sum(s * x for s, x in zip(signs, numbers)) == target
               for signs in itertools.product((1, -1), repeat=len(numbers)))


def check_difficulty(difficulty: str) -> str:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    return difficulty


def check_train_target_max(train_target_max: int) -> int:
    if not TARGET_RANGE[1] <= train_target_max <= DEFAULT_MAX_VALUE:
        raise ValueError(f"train_target_max must be in {TARGET_RANGE[1]}..{DEFAULT_MAX_VALUE}, got {train_target_max}")
    return train_target_max


def split_of(problem: Problem, train_target_max: int = TARGET_RANGE[1]) -> Split | None:
    """Which split a problem belongs to by the rules above (None when its target is outside the range).

    `train_target_max` above 100 lets training and validation problems also take the targets 101..that value
    (never a test target: those are all in 10..100). Why: the test targets are never a training target, so the
    model must learn to notice "this result is the target" for any value; more distinct targets in training make a
    rule for specific values harder to get away with.
    """
    if problem.target in HELDOUT_TARGETS:
        return "test"
    if problem.target not in train_targets(train_target_max):
        return None
    return "val" if bucket(problem) < VAL_PERCENT else "train"


# ---------------------------------------------------------------------------------------------- generation
def _draw(rng: random.Random, max_value: int):
    """One random construction, values only: (numbers, result, merge history), or None on a dead end."""
    rand = rng.random
    lo, hi = NUMBER_RANGE
    span = hi - lo + 1
    numbers = (lo + int(rand() * span), lo + int(rand() * span), lo + int(rand() * span), lo + int(rand() * span))
    values = list(numbers)
    history = []
    while len(values) > 1:
        n = len(values)
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        j += j >= i
        a, b = values[i], values[j]
        if a < b:
            i, j, a, b = j, i, b, a
        moves = [("+", a + b)]
        if a > b:
            moves.append(("-", a - b))
        if a * b <= max_value:
            moves.append(("*", a * b))
        if a % b == 0:
            moves.append(("/", a // b))
        op, r = moves[int(rand() * len(moves))]
        if r > max_value:
            return None
        history.append((i, j, op))
        values = [v for k, v in enumerate(values) if k != i and k != j]
        values.append(r)
    return numbers, values[0], history


def _expression(numbers: Sequence[int], history) -> str:
    exprs: list[Expr] = [Num(x) for x in numbers]
    for i, j, op in history:
        e = BinOp(op, exprs[i], exprs[j])
        exprs = [x for k, x in enumerate(exprs) if k != i and k != j] + [e]
    return to_text(exprs[0])


def construct(rng: random.Random, max_value: int = DEFAULT_MAX_VALUE) -> Problem | None:
    """Draw 4 numbers and combine them with random legal operations (every intermediate a positive integer of at
    most `max_value`); the result is the target. None when the draw went over `max_value`."""
    got = _draw(rng, max_value)
    if got is None:
        return None
    numbers, target, history = got
    return Problem(numbers, target, _expression(numbers, history))


def _stream(split: str, seed: int) -> random.Random:
    # String seeds hash with SHA-512 in CPython: stable across runs, platforms and PYTHONHASHSEED.
    return random.Random(f"countdown/{split}/{seed}")


def iter_problems(split: Split, seed: int, max_value: int = DEFAULT_MAX_VALUE,
                  difficulty: str = DEFAULT_DIFFICULTY, train_target_max: int = TARGET_RANGE[1]) -> Iterator[Problem]:
    """An endless, seeded stream of distinct problems of one split (`train_target_max`: see `split_of`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_difficulty(difficulty)
    check_train_target_max(train_target_max)
    rng = _stream(split, seed)
    seen: set[str] = set()
    targets = HELDOUT_TARGETS if split == "test" else train_targets(train_target_max)
    while True:
        got = _draw(rng, max_value)
        # Cheap tests first: most draws miss the target range.
        if got is None or got[1] not in targets:
            continue
        numbers, target, history = got
        if difficulty == "multiplicative" and has_additive_solution(numbers, target):
            continue
        p = Problem(numbers, target, _expression(numbers, history))
        if split_of(p, train_target_max) != split or p.key in seen:
            continue
        seen.add(p.key)
        yield p


def generate(split: Split, n: int, seed: int, max_value: int = DEFAULT_MAX_VALUE,
             difficulty: str = DEFAULT_DIFFICULTY, train_target_max: int = TARGET_RANGE[1]) -> list[Problem]:
    """`n` distinct problems of `split` (the same list for the same arguments, on every machine)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    it = iter_problems(split, seed, max_value, difficulty, train_target_max)
    return [next(it) for _ in range(n)]


# ---------------------------------------------------------------------------------------------- question text
# How a question lists its numbers: as given (the training data's questions), or largest first, the order of the
# traces' first line ("Reach T from [51 18 17 1]"), so that line is a copy instead of a sort. The same problem either
# way (the numbers are a multiset); the sixth SPRINT model miswrote the sort in 39 of 400 test runs (BENCHMARKS.md).
QUESTION_ORDERS = ("given", "sorted")


def check_question_order(order: str) -> str:
    if order not in QUESTION_ORDERS:
        raise ValueError(f"question_order must be one of {', '.join(QUESTION_ORDERS)}, got {order!r}")
    return order


def render_question(problem: Problem, order: str = "given") -> str:
    """The question exactly as the models are trained on it (the common plain-words phrasing), its numbers in
    `order` (`QUESTION_ORDERS`)."""
    numbers = problem.numbers if check_question_order(order) == "given" else sorted(problem.numbers, reverse=True)
    nums = ", ".join(str(n) for n in numbers)
    return f"Using the numbers [{nums}], create an equation that equals {problem.target}."


_NUMBERS_RE = re.compile(r"numbers?\s*(?:are|:|=)?\s*[\[\(\{]?\s*(\d+(?:\s*(?:,|;|\band\b|\s)\s*\d+)+)\s*[\]\)\}]?",
                         re.IGNORECASE)
_TARGET_RES = [
    re.compile(r"\bequals?\s*(?:to\s*)?(?:exactly\s*)?(\d+)", re.IGNORECASE),
    re.compile(r"\bequal\s+to\s+(\d+)", re.IGNORECASE),
    re.compile(r"\b(?:target|make|reach|get|gives?)\s*(?:number|value)?\s*(?:of|is|:|=)?\s*(\d+)", re.IGNORECASE),
]


def parse_question(text: str) -> Problem:
    """Read a Countdown question written the common way, e.g. "Using the numbers [19, 36, 55, 7], create an
    equation that equals 65. You can use basic arithmetic operations ...": numbers in brackets (or parentheses, or
    none), separated by commas, semicolons, "and" or spaces; the target after "equals" (or "equal to", "target",
    "make", "reach"). Trailing instructions are ignored. Raises `ValueError` saying what is missing."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("question: empty text")
    m = _NUMBERS_RE.search(text)
    if m is None:
        raise ValueError(f"question: no list of numbers found (expected 'Using the numbers [a, b, c, d], ...') in "
                         f"{text[:80]!r}")
    numbers = tuple(int(x) for x in re.findall(r"\d+", m.group(1)))
    rest = text[m.end():]
    for rx in _TARGET_RES:
        t = rx.search(rest) or rx.search(text[: m.start()])
        if t is not None:
            break
    else:
        raise ValueError(f"question: no target found (expected '... that equals T') in {text[:80]!r}")
    return Problem(numbers, int(t.group(1)))


def problems_from_numbers(rows: Sequence[tuple[Sequence[int], int]]) -> list[Problem]:
    """Problems from (numbers, target) pairs (a convenience for tests and hand-made sets)."""
    return [Problem(tuple(nums), int(t)) for nums, t in rows]

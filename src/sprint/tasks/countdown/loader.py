"""Countdown for evaluation: seeded problem sets for any split and seed, and the grader of a model's answer.

`load_countdown("test", n, seed)` gives `n` problems with held-out targets (never seen in training, for any seed);
`"val"` gives unseen problems with training targets. The grader takes the expression from the model's final
`\\boxed{}` (the one inside the final-answer block when there is one) and checks it with the verifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sprint.tasks.countdown.expr import Verdict, check_answer
from sprint.tasks.countdown.problems import (DEFAULT_DIFFICULTY, DEFAULT_MAX_VALUE, Problem, check_question_order,
                                             generate, parse_question, render_question)


@dataclass
class CountdownItem:
    """One evaluation item: `question` is the exact text the model sees; `solution` is one known answer."""

    id: str
    question: str
    numbers: tuple[int, ...]
    target: int
    solution: str | None = None
    split: str = "test"
    meta: dict = field(default_factory=dict)

    @property
    def problem(self) -> Problem:
        return Problem(self.numbers, self.target, self.solution)

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "numbers": list(self.numbers), "target": self.target,
                "solution": self.solution, "split": self.split}


def item_from_problem(p: Problem, item_id: str, split: str = "test", question_order: str = "given") -> CountdownItem:
    return CountdownItem(item_id, render_question(p, question_order), tuple(p.numbers), p.target, p.construction,
                         split)


def load_countdown(split: str = "test", n: int = 1000, seed: int = 0, *, difficulty: str = DEFAULT_DIFFICULTY,
                   max_value: int = DEFAULT_MAX_VALUE, question_order: str = "given") -> list[CountdownItem]:
    """`n` problems of `split` generated from `seed` (the same items for the same arguments, on every machine),
    their questions listing the numbers in `question_order` (`QUESTION_ORDERS`: the same problems either way).

    Ids are `countdown-<split>-<seed>-<index>`, the ids `sprint countdown data` writes for the same seed.
    """
    from sprint.tasks.countdown.data import problem_id

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_question_order(question_order)
    return [item_from_problem(p, problem_id(split, seed, i), split, question_order)
            for i, p in enumerate(generate(split, n, seed, max_value, difficulty))]


def item_from_question(text: str, item_id: str = "question", question_order: str = "given") -> CountdownItem:
    """An item from a question in plain words ("Using the numbers [...], create an equation that equals T. ..."),
    with the question rewritten in the exact form the models were trained on (numbers in `question_order`)."""
    p = parse_question(text)
    return item_from_problem(p, item_id, "user", question_order)


def extract_expression(answer_text: str) -> str | None:
    """The expression a model answered with: its final `\\boxed{}` (None when it boxed nothing)."""
    from sprint.eval.grading import extract_answer

    return extract_answer(answer_text)


def check_countdown(answer_text: str, item: CountdownItem | Problem) -> Verdict:
    """Grade with a reason: the boxed expression (or, when nothing is boxed, the whole text) must be a valid
    answer to the item's problem."""
    expr = extract_expression(answer_text)
    if expr is None:
        expr = answer_text.strip()
        if not expr:
            return Verdict(False, "no answer")
    return check_answer(expr, item.numbers, item.target)


def grade_countdown(answer_text: str, item: CountdownItem | Problem) -> bool:
    """Whether a model output (or a bare expression) solves the item (see `check_countdown`)."""
    return check_countdown(answer_text, item).ok

"""Countdown: reach a target from four numbers with + - * / (each number once), end to end.

* `problems`: the problem record, seeded generation (solvable by construction), train / val / test splits with 10%
  of the targets held out of training, plain-words questions (render and parse);
* `expr`: the rules, a safe expression parser, the verifier and an exhaustive solver;
* `search`: the depth-first search with a heuristic order whose text is the training trace;
* `traces`: the search as curation `Step`s, packed into SPRINT stages, and as one sequential text;
* `tokenizer`: a small tokenizer made for these traces (numbers, words and the format's tags as single tokens);
* `data`: `sprint countdown data`: problems, training records of both formats, tokenizer and stats;
* `loader`: `load_countdown` and `grade_countdown` for evaluation.
"""

from sprint.tasks.countdown.expr import Verdict, check_answer, first_solution, parse_expression, solutions
from sprint.tasks.countdown.loader import (
    CountdownItem,
    check_countdown,
    grade_countdown,
    item_from_question,
    load_countdown,
)
from sprint.tasks.countdown.problems import (
    HELDOUT_TARGETS,
    TRAIN_TARGETS,
    Problem,
    generate,
    parse_question,
    QUESTION_ORDERS,
    render_question,
    split_of,
)

__all__ = [
    "CountdownItem", "HELDOUT_TARGETS", "Problem", "TRAIN_TARGETS", "Verdict", "check_answer", "check_countdown",
    "first_solution", "generate", "grade_countdown", "item_from_question", "load_countdown", "parse_expression",
    "parse_question", "QUESTION_ORDERS", "render_question", "solutions", "split_of",
]

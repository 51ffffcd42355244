"""One search, two trace formats: a problem's DFS as curation `Step`s, packed into SPRINT stages, and as one text.

The steps of a search (see `sprint.tasks.countdown.search`):

* step 1, plan only: the intro line ("Reach T from [...]");
* one step per explored first move: prompt "Explore a+b=c", execution the lines of that branch; each depends on
  step 1 only, so the branches are independent of each other;
* a last plan-only step that depends on the branch that found the solution (its stage comes after that branch's,
  and its plan opens with the "Based on execution_i.j:" line that names it).

They go through the curation module exactly as LLM-curated traces do: `sprint.curate.packing.pack` with the width
cap W (branches fill stages W at a time, in search order: `trace.order`, heuristic or canonical), its ratio and stage-count filters, and
`sprint.curate.records.build_records` (render, parse back, chat messages). A planner cannot know which branch of a
stage will succeed, so the SPRINT trace explores every branch of the stage that holds the first solution (W of them,
or fewer when the moves run out); the sequential trace is the DFS text in order up to the first solution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sprint.curate.packing import DEFAULT_MAX_STAGES, DEFAULT_MIN_RATIO, Packing, Step, pack
from sprint.tasks.countdown.expr import check_answer
from sprint.tasks.countdown.problems import DEFAULT_MAX_VALUE, Problem, check_question_order, render_question
from sprint.tasks.countdown.search import (DEAD_END, DEFAULT_CHECK, DEFAULT_MAX_BRANCHES, DEFAULT_ORDER,
                                          DEFAULT_SOLUTION_DIGITS, SOLUTION_PREFIX, Search, check_check,
                                          check_order, check_solution_digits, search, solution_text)

DEFAULT_WIDTH = 4
#: `TraceConfig.executor_pick` values.
EXECUTOR_PICKS = ("solution_first", "uniform")


def check_executor_pick(pick: str) -> str:
    if pick not in EXECUTOR_PICKS:
        raise ValueError(f"trace.executor_pick must be one of {', '.join(EXECUTOR_PICKS)}, got {pick!r}")
    return pick


@dataclass
class TraceConfig:
    """How traces are made and which are kept. `width` None means no cap (every ranked move in stage 1)."""

    width: int | None = DEFAULT_WIDTH
    max_branches: int = DEFAULT_MAX_BRANCHES
    max_value: int = DEFAULT_MAX_VALUE
    min_ratio: float = DEFAULT_MIN_RATIO
    max_stages: int = DEFAULT_MAX_STAGES
    #: Records longer than this many tokens (question prefix + completion) are dropped from training data.
    context: int = 2048
    #: Order of the first moves: "heuristic" (closest result first) or "canonical" (list order; see the search).
    order: str = DEFAULT_ORDER
    #: How the tokenizer splits numbers: "digits" (one token per digit) or "whole" (one token per number).
    numbers: str = "digits"
    #: Executor records kept per stage (None: one per prompt). The SPRINT record already trains every execution;
    #: the executor records re-teach them in the executor's own view at the cost of repeating the context, so a
    #: cap buys more distinct problems for the same token budget. The branch that found the solution always keeps
    #: its record under `executor_pick: solution_first`; the others are picked by a hash of the record id.
    executor_views: int | None = None
    #: Which executor records the cap keeps: "solution_first" (a branch that found the solution, then by hash; the
    #: third pair) or "uniform" (by hash alone). Why "uniform": with the solving branch always kept, 56% of the
    #: kept executor records end in a Solution line while 20% of all executions do, so the executor learns to
    #: expect a hit far more often than the search finds one (13% of the third pair's Solution lines are true).
    executor_pick: str = "solution_first"
    #: The planner opens each later stage with the outcome line of the previous stage's executions (`outcome_line`).
    outcomes: bool = False
    #: How a branch checks a last pair's results against the target (`sprint.tasks.countdown.search.pair_line`).
    #: Why not just "none": there the stop is one rare decision (is this number the target?) that the small models
    #: learned per familiar target and got wrong on unseen ones (13% of the third pair's executor Solution lines are
    #: true on 1,000 test problems). "distance" (|result - target| after each result) did worse: the model got 91%
    #: of the distances wrong on test targets (BENCHMARKS.md). "target" restates the target on the line, so the
    #: comparison is local; "compare" also marks each result <, > or =, a dense signal that has to read it.
    check: str = DEFAULT_CHECK
    #: The answer plan restates the Solution line it is based on ("Based on execution_1.2:" then "Solution ...").
    #: Why: the final answer is a copy of that line, and `\boxed{` never occurs earlier, so nothing in the context
    #: points the copy at its source; the third pair's planner, given perfect executions, copied it right in 30 of
    #: 100 validation records (BENCHMARKS.md). "Solution " does occur before, right in front of the text to copy,
    #: which is the pattern a model copies by; the boxed answer then copies the line just above it. Unproven: an
    #: 80-step fine-tune of the bundled model on such records copied the line right in 8 of 100 (control: 17).
    restate_solution: bool = False
    #: The outcome line carries the first Solution's expression after its word ("Dead Solution (33-12)*(98-89)"),
    #: so the boxed answer copies a line a few tokens above it. Why not `restate_solution`: that restatement is the
    #: same far copy, from an execution the planner names by number, and a model trained on it failed it as often
    #: (77 of 284 test runs with a true Solution answered right, BENCHMARKS.md). The outcome line already visits the
    #: executions in order and reads each one's last line (it decides Dead or Solution there), so the copy is made
    #: where the planner's reading already is. Needs `outcomes`.
    outcome_solution: bool = False
    #: How Solution lines write their expression's digits: "plain" or "superscript" (`Solution (⁸³+²²)/(¹⁸-¹⁵)`;
    #: `sprint.tasks.countdown.search.solution_text` says why). The outcome line's and the restated expression
    #: follow; the boxed answer keeps plain digits (so the last copy turns them back, from the line above).
    solution_digits: str = DEFAULT_SOLUTION_DIGITS
    #: How the records' questions list the numbers: "given" (as generated) or "sorted" (largest first, the order of
    #: the first line "Reach T from [...]", which then copies instead of sorting; `sprint eval --question-order`).
    question_order: str = "given"

    def __post_init__(self):
        if self.width is not None and self.width < 1:
            raise ValueError(f"trace.width must be >= 1 or null, got {self.width}")
        if self.max_branches < 1:
            raise ValueError(f"trace.max_branches must be >= 1, got {self.max_branches}")
        if self.max_value < 100:
            raise ValueError(f"trace.max_value must be >= 100 (targets go up to 100), got {self.max_value}")
        check_order(self.order)
        check_check(self.check)
        from sprint.tasks.countdown.tokenizer import check_numbers

        check_numbers(self.numbers)
        if self.executor_views is not None and self.executor_views < 1:
            raise ValueError(f"trace.executor_views must be >= 1 or null, got {self.executor_views}")
        check_executor_pick(self.executor_pick)
        check_solution_digits(self.solution_digits)
        check_question_order(self.question_order)
        if self.outcome_solution and not self.outcomes:
            raise ValueError("trace.outcome_solution needs trace.outcomes: true (it extends the outcome line)")
        if self.outcome_solution and self.restate_solution:
            raise ValueError("trace.outcome_solution and trace.restate_solution both restate the Solution: choose one")


@dataclass
class ProblemTraces:
    """Both formats of one problem's search. `reason` says why it cannot be used (None when it can)."""

    problem: Problem
    search: Search
    question: str  # the question as the records ask it (`trace.question_order`)
    steps: list[Step] = field(default_factory=list)
    parents: dict[int, list[int]] = field(default_factory=dict)
    packing: Packing | None = None
    final_answer: str | None = None
    reason: str | None = None
    openers: dict[int, str] = field(default_factory=dict)  # stage -> outcome line (`trace.outcomes`)

    @property
    def sequential_thinking(self) -> str:
        return self.search.sequential_text()


def answer_text(solution: str) -> str:
    return "\\boxed{" + solution + "}"


def sprint_steps(s: Search, width: int | None,
                 restate_solution: bool = False) -> tuple[list[Step], dict[int, list[int]]]:
    """The steps and DAG of a solved search (branches up to the end of the stage holding the first solution); with
    `restate_solution` the answer step's plan is the Solution line of the branch it depends on."""
    k = s.solved_at
    if k is None:
        raise ValueError(f"problem {s.problem.key}: the search found no solution")
    m = len(s.ranked) if width is None else min(len(s.ranked), math.ceil(k / width) * width)
    steps = [Step(1, description="state and target", plan=s.intro)]
    parents: dict[int, list[int]] = {1: []}
    for i in range(1, m + 1):
        b = s.branch(i)
        steps.append(Step(i + 1, description=f"branch {i}", prompt=b.prompt, execution=b.execution))
        parents[i + 1] = [1]
    final = m + 2
    restated = SOLUTION_PREFIX + solution_text(s.solution, s.solution_digits) if restate_solution else ""
    steps.append(Step(final, description="answer from the branch that found it", plan=restated))
    parents[final] = [k + 1]
    return steps, parents


def outcome_line(found: list[bool], solutions: list[str | None] | None = None) -> str:
    """What the planner writes first after a stage's executions: one word per execution in order, "Dead" for a
    dead end, up to and including the first "Solution" (the one the answer will be based on).

    Why: without it the planner's only reading of the executions is its next token (another stage's prompts or
    "Based on execution_i.j:"), one decision over every execution at once; a small model learned to answer after
    any stage and to name the wrong execution (the bundled pair of 2026-11-26, with perfect executions given). The
    line turns that into one supervised check per execution, each against one execution, and the "Based on" index
    becomes the position of the word "Solution". It costs one token per execution on the critical path.
    With `solutions` (each execution's expression, `trace.outcome_solution`), the first Solution word is followed by
    its expression.
    """
    words = []
    for i, ok in enumerate(found):
        words.append(SOLUTION_WORD if ok else DEAD_WORD)
        if ok:
            if solutions is not None:
                words.append(solutions[i])
            break
    return " ".join(words)


#: The outcome line's words: the first word of the line that closes a branch.
DEAD_WORD = DEAD_END.split()[0]
SOLUTION_WORD = SOLUTION_PREFIX.strip()


def stage_openers(s: Search, steps: list[Step], packing: Packing, *, with_solution: bool = False) -> dict[int, str]:
    """Stage k+1's outcome line for every stage k that has executions (branch i is step i+1, see `sprint_steps`);
    `with_solution`: the first Solution word is followed by its expression (`trace.outcome_solution`)."""
    branches: dict[int, list] = {}
    for st in steps:
        if st.has_execution:
            branches.setdefault(packing.stages[st.id], []).append(s.branch(st.id - 1))
    mark = lambda b: solution_text(b.solution, s.solution_digits) if b.solved else None  # noqa: E731
    return {k + 1: outcome_line([b.solved for b in v], [mark(b) for b in v] if with_solution else None)
            for k, v in branches.items() if k + 1 <= packing.num_stages}


def build_traces(problem: Problem, cfg: TraceConfig) -> ProblemTraces:
    """Search a problem and pack its steps; `reason` is set when the search or the filters reject it."""
    s = search(problem, cfg.max_branches, cfg.max_value, cfg.order, cfg.check, cfg.solution_digits)
    out = ProblemTraces(problem, s, render_question(problem, cfg.question_order))
    if s.solved_at is None:
        out.reason = f"unsolved: no solution in the first {cfg.max_branches} branches"
        return out
    out.final_answer = answer_text(s.solution)
    verdict = check_answer(s.solution, problem.numbers, problem.target)
    if not verdict:  # a bug in the search, never data
        raise AssertionError(f"problem {problem.key}: search solution {s.solution!r} is wrong: {verdict.reason}")
    out.steps, out.parents = sprint_steps(s, cfg.width, cfg.restate_solution)
    out.packing = pack(out.steps, out.parents, width=cfg.width, min_ratio=cfg.min_ratio, max_stages=cfg.max_stages)
    if not out.packing.kept:
        out.reason = out.packing.reason
    elif cfg.outcomes:
        out.openers = stage_openers(s, out.steps, out.packing, with_solution=cfg.outcome_solution)
    return out


def build_records(item_id: str, traces: ProblemTraces, *, executor_records: bool = True) -> list[dict]:
    """The training records of one usable problem (curation's renderer and checks): [SPRINT, sequential, then one
    executor record per prompt of the SPRINT trace (unless `executor_records` is False)], all carrying the
    problem's numbers and target."""
    from sprint.curate.records import build_records as curate_records

    if traces.reason is not None or traces.packing is None:
        raise ValueError(f"{item_id}: traces are not usable ({traces.reason})")
    p = traces.problem
    records = curate_records(item_id, traces.question, traces.search.solution, traces.sequential_thinking,
                             traces.steps, traces.packing, traces.final_answer, executor_records=executor_records,
                             openers=traces.openers)
    for rec in records:
        rec["numbers"] = list(p.numbers)
        rec["target"] = p.target
    return records

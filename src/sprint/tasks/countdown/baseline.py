"""`sprint countdown baseline`: what the search alone solves within a budget of sequential tokens.

For each problem the depth-first search of `sprint.tasks.countdown.search` runs with the data's settings (first
moves in `order`, at most `max_branches` of them, values up to `max_value`), and its sequential trace is rendered
exactly as the training data renders it (`Search.sequential_text`: the intro, then every explored branch, up to and
including the Solution line). Its cost is the number of tokens of that text under the models' tokenizer (counted as
`sprint eval` counts a sequential model's thinking: the text stripped, no special tokens); with `with_answer` the
final answer the sequential records write after `</think>` (`\\boxed{...}`) is counted too, as `sprint eval` does
for a model and as `stats.json`'s search baseline does. The search solves a problem within a budget B iff its cost
is <= B; a problem the search cannot solve within `max_branches` first moves is unsolved at every budget.

Budgets are flat (the same B for every problem) or per problem: from an eval run's `results.jsonl`, each problem
gets the sequential tokens that run spent on it (matched by id), so the search gets exactly the model's budget; the
run's mean over the same problems is reported as a flat budget as well, next to the model's own accuracy.

Problems are the held-out test problems `sprint eval --task countdown --n N --seed S` generates (same ids, same
numbers), or a JSONL file of problems (`numbers`, `target`, optional `id`: the format of `test.jsonl`), read as
`sprint eval --data FILE` reads it (ids default to the item number; `--n` with a file takes the same seeded sample).
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from sprint.tasks.countdown.problems import DEFAULT_MAX_VALUE, Problem
from sprint.tasks.countdown.search import (DEFAULT_CHECK, DEFAULT_MAX_BRANCHES, DEFAULT_ORDER, check_check,
                                          check_order, search)
from sprint.tasks.countdown.traces import answer_text

#: The tokenizer used when none is given: the bundled SPRINT model's (the sequential model's is the same).
DEFAULT_TOKENIZER = "countdown-sprint"
#: Problems generated when no file and no count are given (as `sprint eval --task countdown`).
DEFAULT_N = 1000


@dataclass(frozen=True)
class BaselineProblem:
    id: str
    problem: Problem


@dataclass(frozen=True)
class SearchCost:
    """One problem's search: `tokens` up to and including the Solution line (None: unsolved within the branch
    limit), the branch that found it, and the branches explored."""

    id: str
    tokens: int | None
    solved_at: int | None
    branches: int

    @property
    def solved(self) -> bool:
        return self.tokens is not None


@dataclass(frozen=True)
class RunBudgets:
    """Per-problem budgets from an eval run: `budgets[id]` = sequential tokens the run spent on that problem, and
    whether the run's answer was correct."""

    source: str
    label: str
    budgets: dict[str, float]
    correct: dict[str, bool]


# ---------------------------------------------------------------------------------------------- problems
def _int_field(row: dict, key: str, where: str) -> int:
    if key not in row or row[key] is None:
        raise ValueError(f"{where}: missing field {key!r}")
    return _as_int(row[key], f"{where}: field {key!r}")


def _as_int(x: Any, where: str) -> int:
    if isinstance(x, bool) or (isinstance(x, float) and not x.is_integer()):
        raise ValueError(f"{where} must be an integer, got {x!r}")
    try:
        return int(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be an integer, got {x!r}") from None


def _problem(numbers: Any, target: Any, where: str) -> Problem:
    if not isinstance(numbers, (list, tuple)) or len(numbers) != 4:
        raise ValueError(f"{where}: field 'numbers' must be a list of 4 positive integers (the search needs 4), "
                         f"got {numbers!r}")
    nums = tuple(_as_int(x, f"{where}: field 'numbers'") for x in numbers)
    try:
        return Problem(nums, target)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def read_problems(path: str | Path) -> list[BaselineProblem]:
    """Problems from a JSONL file (`numbers`, `target`, optional `id`; other fields ignored). Ids default to the
    item number (as `sprint eval --data` numbers them); errors name the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problems file not found: {path}")
    from sprint.jsonl import iter_jsonl

    out: list[BaselineProblem] = []
    first_line: dict[str, int] = {}
    for k, (lineno, row) in enumerate(iter_jsonl(path), start=1):
        where = f"{path}: line {lineno}"
        if row.get("numbers") is None:
            raise ValueError(f"{where}: missing field 'numbers'")
        target = _int_field(row, "target", where)
        p = _problem(row["numbers"], target, where)
        pid = str(row.get("id") or k)
        if pid in first_line:
            raise ValueError(f"{where}: repeats id {pid!r} (first on line {first_line[pid]})")
        first_line[pid] = lineno
        out.append(BaselineProblem(pid, p))
    if not out:
        raise ValueError(f"{path}: no problems")
    return out


def load_problems(data: str | Path | None = None, n: int | None = None, seed: int = 0) -> list[BaselineProblem]:
    """The problems `sprint eval --task countdown [--data FILE] --n N --seed S` evaluates: generated held-out test
    problems (`n`, default 1000, from `seed`), or those of a file (all, or a seeded sample of `n`, as eval takes)."""
    from sprint.eval.tasks import CountdownTask, select

    if n is not None and n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if data is None:
        items = CountdownTask().load(n or DEFAULT_N, seed)
        return [BaselineProblem(it.id, _problem(it.meta["numbers"], it.meta["target"], it.id)) for it in items]
    return select(read_problems(data), n, seed)


# ---------------------------------------------------------------------------------------------- search costs
def load_counter(tokenizer: str | Path | None = None):
    """A token counter for a tokenizer directory or a bundled model's name (default: `DEFAULT_TOKENIZER`); counts
    as `sprint eval` does (the tokenizer itself, no special tokens). Returns (counter, resolved path)."""
    from sprint.format.metrics import HFTokenCounter
    from sprint.models import resolve_model

    name = str(tokenizer) if tokenizer is not None else DEFAULT_TOKENIZER
    path = resolve_model(name)
    if not Path(path).exists():
        raise FileNotFoundError(f"tokenizer not found: {name} (a tokenizer directory, or countdown-sprint / "
                                f"countdown-sequential for a bundled model's)")
    return HFTokenCounter(path), path


def search_cost(item: BaselineProblem, counter, *, max_branches: int = DEFAULT_MAX_BRANCHES,
                max_value: int = DEFAULT_MAX_VALUE, order: str = DEFAULT_ORDER,
                with_answer: bool = False, check: str = DEFAULT_CHECK) -> SearchCost:
    """Run the search on one problem and count the tokens of its sequential trace up to the Solution line (written
    with the check `check`, as traces made with that `trace.check`)."""
    s = search(item.problem, max_branches=max_branches, max_value=max_value, order=order, check=check)
    if s.solution is None:
        return SearchCost(item.id, None, None, len(s.branches))
    texts = [s.sequential_text().strip()] + ([answer_text(s.solution)] if with_answer else [])
    return SearchCost(item.id, sum(counter(texts)), s.solved_at, len(s.branches))


def search_costs(items: Sequence[BaselineProblem], counter, *, max_branches: int = DEFAULT_MAX_BRANCHES,
                 max_value: int = DEFAULT_MAX_VALUE, order: str = DEFAULT_ORDER, with_answer: bool = False,
                 progress: bool = False, check: str = DEFAULT_CHECK) -> list[SearchCost]:
    check_order(order)
    if max_branches < 1:
        raise ValueError(f"max_branches must be >= 1, got {max_branches}")
    from tqdm.auto import tqdm

    return [search_cost(it, counter, max_branches=max_branches, max_value=max_value, order=order,
                        with_answer=with_answer, check=check)
            for it in tqdm(items, desc="search", unit="problem", disable=not progress, dynamic_ncols=True,
                           file=sys.stderr)]


# ---------------------------------------------------------------------------------------------- budgets
def _run_label(path: Path) -> str:
    return path.parent.name if path.name == "results.jsonl" and path.parent.name else path.stem


def read_run_budgets(path: str | Path, items: Sequence[BaselineProblem]) -> RunBudgets:
    """Per-problem budgets from an eval run's `results.jsonl` (or its run folder): the `sequential_tokens` of each
    problem's record, matched by `id`. A resumed run may hold failed records before the good one: as a resume does,
    the first record without an error counts. Every problem must have one (the error names the first missing id),
    and a record that names its numbers and target (`meta`) must name the same problem."""
    from sprint.eval.runner import RESULTS, ResultLog

    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    records = ResultLog(path).read()  # line-numbered errors for broken lines; a cut-off last line is dropped
    kept: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for rec in records:
        rid = str(rec["id"])
        if rec.get("error"):
            failed.setdefault(rid, str(rec["error"]))
        elif rid not in kept:
            kept[rid] = rec
    budgets: dict[str, float] = {}
    correct: dict[str, bool] = {}
    for it in items:
        pid = it.id
        rec = kept.get(pid)
        if rec is None:
            why = f"only failed records ({failed[pid]}); resume that run first" if pid in failed else "no record"
            raise ValueError(f"{path}: problem {pid!r} has {why} (the run must cover every problem; "
                             f"{len(kept)} usable records in the file)")
        value = rec.get("sequential_tokens")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}: problem {pid!r}: field 'sequential_tokens' must be a number >= 0, got "
                             f"{value!r}")
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        nums, target = meta.get("numbers"), meta.get("target")
        p = it.problem
        if (nums is not None and sorted(int(x) for x in nums) != sorted(p.numbers)) or \
                (target is not None and int(target) != p.target):
            raise ValueError(f"{path}: problem {pid!r} is {nums} -> {target} in the run but "
                             f"{list(p.numbers)} -> {p.target} here (a run over other problems?)")
        budgets[pid] = float(value)
        correct[pid] = bool(rec.get("correct"))
    return RunBudgets(str(path), _run_label(path), budgets, correct)


# ---------------------------------------------------------------------------------------------- tables
def accuracy(k: int, n: int) -> dict[str, Any]:
    from sprint.eval.runner import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"n": n, "solved": k, "accuracy": k / n if n else None, "accuracy_ci95": [lo, hi] if n else None}


def cost_distribution(costs: Sequence[SearchCost]) -> dict[str, Any]:
    """Tokens of the whole search (up to its solution) over the problems it solves; unsolved ones are counted."""
    xs = sorted(c.tokens for c in costs if c.tokens is not None)
    out: dict[str, Any] = {"n": len(costs), "solved": len(xs), "unsolved": len(costs) - len(xs)}
    if xs:
        p90 = statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else float(xs[0])
        out.update(mean=statistics.fmean(xs), median=float(statistics.median(xs)), p90=float(p90),
                   min=xs[0], max=xs[-1])
    return out


def within(costs: Sequence[SearchCost], budget: float | dict[str, float]) -> int:
    """How many problems the search solves within the budget (one for all, or one per problem id)."""
    if isinstance(budget, dict):
        return sum(c.tokens is not None and c.tokens <= budget[c.id] for c in costs)
    return sum(c.tokens is not None and c.tokens <= budget for c in costs)


def baseline_rows(costs: Sequence[SearchCost], budgets: Iterable[float] = (),
                  runs: Sequence[RunBudgets] = ()) -> list[dict[str, Any]]:
    """One row per budget: flat budgets in the order given, then for each run its per-problem budgets and its mean
    as a flat budget (with the run's own accuracy on the same problems)."""
    n = len(costs)
    rows = []
    for b in budgets:
        if b < 0:
            raise ValueError(f"budget must be >= 0, got {b}")
        rows.append({"budget": b, "kind": "flat", **accuracy(within(costs, b), n)})
    for run in runs:
        mean = statistics.fmean(run.budgets[c.id] for c in costs) if costs else float("nan")
        model = accuracy(sum(run.correct[c.id] for c in costs), n)
        model = {"run": run.label, "source": run.source, "correct": model["solved"],
                 "accuracy": model["accuracy"], "accuracy_ci95": model["accuracy_ci95"]}
        rows.append({"budget": f"per problem: {run.label}", "kind": "per_problem", "mean_budget": mean,
                     **accuracy(within(costs, run.budgets), n), "model": model})
        rows.append({"budget": mean, "kind": "run_mean", "run": run.label, **accuracy(within(costs, mean), n),
                     "model": model})
    return rows


def run_baseline(*, data: str | Path | None = None, n: int | None = None, seed: int = 0,
                 tokenizer: str | Path | None = None, order: str = DEFAULT_ORDER,
                 max_branches: int = DEFAULT_MAX_BRANCHES, max_value: int = DEFAULT_MAX_VALUE,
                 budgets: Sequence[float] = (), budget_from: Sequence[str | Path] = (), with_answer: bool = False,
                 check: str = DEFAULT_CHECK, progress: bool = False) -> dict[str, Any]:
    """The whole baseline: load the problems, read the runs' budgets (before the search, so a bad file fails fast),
    search and count, and return the summary (`format_table` prints it)."""
    check_order(order)
    check_check(check)
    if not budgets and not budget_from:
        raise ValueError("no budget: give --budget N and/or --budget-from RESULTS.jsonl")
    for b in budgets:
        if b < 0:
            raise ValueError(f"budget must be >= 0, got {b}")
    items = load_problems(data, n, seed)
    ids = [it.id for it in items]
    runs = [read_run_budgets(src, items) for src in budget_from]
    counter, tok_path = load_counter(tokenizer)
    costs = search_costs(items, counter, max_branches=max_branches, max_value=max_value, order=order,
                         with_answer=with_answer, progress=progress, check=check)
    return {
        "problems": {"source": str(data) if data is not None else "generated held-out test problems "
                     "(sprint eval --task countdown)", "n": len(items), "n_requested": n, "seed": seed,
                     "first_id": ids[0], "last_id": ids[-1]},
        "search": {"order": order, "max_branches": max_branches, "max_value": max_value, "check": check,
                   "counted": "trace up to and including the Solution line" + (" and the \\boxed{} answer"
                                                                                if with_answer else ""),
                   "tokenizer": str(tokenizer) if tokenizer is not None else DEFAULT_TOKENIZER,
                   "tokenizer_path": tok_path},
        "cost_tokens": cost_distribution(costs),
        "solved_at_branch": {str(k): v for k, v in sorted(_count(c.solved_at for c in costs if c.solved).items())},
        "budgets": baseline_rows(costs, budgets, runs),
    }


def _count(xs: Iterable[Any]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def _pct(row: dict) -> str:
    if row.get("accuracy") is None:
        return "-"
    lo, hi = row["accuracy_ci95"]
    return f"{100 * row['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _budget_text(row: dict) -> str:
    if row["kind"] == "flat":
        b = row["budget"]
        return f"{b:,}" if float(b).is_integer() else f"{b:,.1f}"
    if row["kind"] == "run_mean":
        return f"{row['budget']:,.1f} (mean of {row['run']})"
    return f"{row['budget']} (mean {row['mean_budget']:,.1f})"


def format_table(summary: dict[str, Any]) -> str:
    """A Markdown table: one row per budget, then the token distribution of the full search."""
    head = "| budget (sequential tokens) | n | search solved | search accuracy (95% CI) | model accuracy (95% CI) |"
    lines = [head, "|---|---|---|---|---|"]
    for r in summary["budgets"]:
        model = r.get("model")
        lines.append(f"| {_budget_text(r)} | {r['n']} | {r['solved']} | {_pct(r)} | "
                     f"{_pct(model) if model else '-'} |")
    c, s = summary["cost_tokens"], summary["search"]
    dist = (f"mean {c['mean']:,.1f}, median {c['median']:,.1f}, p90 {c['p90']:,.1f}, max {c['max']:,}"
            if c["solved"] else "no problem solved")
    lines.append("")
    lines.append(f"Full search ({s['order']} order, max_branches {s['max_branches']}, max_value {s['max_value']}"
                 f", check {s.get('check', 'none')}; "
                 f"tokens of the {s['counted']}, tokenizer {s['tokenizer']}): solves {c['solved']} of {c['n']} "
                 f"({c['unsolved']} unsolved); tokens over the solved: {dist}.")
    return "\n".join(lines) + "\n"

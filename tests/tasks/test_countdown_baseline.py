"""`sprint countdown baseline`: the search alone within token budgets (flat, or per problem from an eval run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint.cli import main
from sprint.format import parse_sequential
from sprint.format.metrics import HFTokenCounter
from sprint.tasks.countdown.baseline import (BaselineProblem, baseline_rows, format_table, load_problems,
                                             read_problems, read_run_budgets, run_baseline, search_cost,
                                             search_costs)
from sprint.tasks.countdown.problems import DEFAULT_MAX_VALUE, Problem
from sprint.tasks.countdown.search import DEFAULT_MAX_BRANCHES, DEFAULT_ORDER, search
from sprint.tasks.countdown.traces import TraceConfig, build_records, build_traces

REPO = Path(__file__).resolve().parents[2]
KNOWN = BaselineProblem("known", Problem((17, 18, 51, 1), 16))        # heuristic: solved by branch 3
UNSOLVABLE = BaselineProblem("none", Problem((1, 1, 1, 1), 97))       # no expression reaches 97


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def counter(countdown_tokenizer):
    return HFTokenCounter(countdown_tokenizer)


def test_defaults_are_the_shipped_data_config():
    import yaml

    trace = yaml.safe_load((REPO / "configs" / "countdown-data.yaml").read_text())["trace"]
    assert (trace["max_branches"], trace["max_value"], trace["order"]) == \
        (DEFAULT_MAX_BRANCHES, DEFAULT_MAX_VALUE, DEFAULT_ORDER)


def test_cost_is_the_training_trace_up_to_the_solution_line(countdown_tokenizer, counter):
    c = search_cost(KNOWN, counter, order="heuristic")
    s = search(KNOWN.problem, order="heuristic")
    assert c.solved and c.solved_at == 3 == c.branches
    text = s.sequential_text()
    assert text.splitlines()[-1] == "Solution (51-18)-(17*1)"
    assert c.tokens == len(countdown_tokenizer(text, add_special_tokens=False)["input_ids"])
    # The text counted is the thinking of the sequential training record, byte for byte.
    t = build_traces(KNOWN.problem, TraceConfig(order="heuristic", max_branches=16))
    seq_rec = build_records("known", t)[1]
    assert parse_sequential(seq_rec["messages"][-1]["content"]).thinking == text
    # With the answer: the boxed expression the record writes after the thinking.
    with_answer = search_cost(KNOWN, counter, order="heuristic", with_answer=True)
    boxed = len(countdown_tokenizer("\\boxed{(51-18)-(17*1)}", add_special_tokens=False)["input_ids"])
    assert with_answer.tokens == c.tokens + boxed
    # Another check: the text of traces made with that trace.check.
    dist = search_cost(KNOWN, counter, order="heuristic", check="compare")
    text = search(KNOWN.problem, order="heuristic", check="compare").sequential_text()
    assert dist.tokens == len(countdown_tokenizer(text, add_special_tokens=False)["input_ids"]) > c.tokens
    # Another order is another search (and the branch limit bounds it).
    assert search_cost(KNOWN, counter, order="canonical").tokens != c.tokens
    assert not search_cost(KNOWN, counter, order="heuristic", max_branches=2).solved


def test_budgets_flat_and_unsolvable_problems(counter):
    costs = search_costs([KNOWN, UNSOLVABLE], counter, order="heuristic")
    assert costs[1].tokens is None and costs[1].solved_at is None
    k = costs[0].tokens
    rows = baseline_rows(costs, [k - 1, k, 10**9])
    assert [r["solved"] for r in rows] == [0, 1, 1]          # within B iff cost <= B; unsolvable never
    assert rows[1]["n"] == 2 and rows[1]["accuracy"] == 0.5
    lo, hi = rows[1]["accuracy_ci95"]
    assert 0 < lo < 0.5 < hi < 1


def test_problems_match_sprint_eval(tmp_path):
    from sprint.eval.tasks import CountdownTask

    got = load_problems(n=7, seed=1)
    items = CountdownTask().load(7, 1)
    assert [g.id for g in got] == [it.id for it in items] == [f"countdown-test-1-{i:06d}" for i in range(7)]
    assert [list(g.problem.numbers) for g in got] == [it.meta["numbers"] for it in items]
    # A file: ids from the rows (else the item number), and --n the seeded sample eval takes.
    rows = [{"id": f"p{i}", "numbers": list(g.problem.numbers), "target": g.problem.target}
            for i, g in enumerate(got)]
    f = _jsonl(tmp_path / "p.jsonl", rows)
    assert [p.id for p in read_problems(f)] == [f"p{i}" for i in range(7)]
    assert [p.id for p in load_problems(f, n=3, seed=2)] == \
        [it.id for it in CountdownTask(f).load(3, 2)]
    g = _jsonl(tmp_path / "noid.jsonl", [{"numbers": [2, 3, 4, 5], "target": 14}, "", {"numbers": [2, 3, 4, 6],
                                                                                         "target": 15}])
    assert [p.id for p in read_problems(g)] == ["1", "2"]


@pytest.mark.parametrize("row, message", [
    ('{"numbers": [1, 2, 3, 4]}', "line 2: missing field 'target'"),
    ('{"target": 10}', "line 2: missing field 'numbers'"),
    ('{"numbers": [1, 2, 3], "target": 10}', "line 2: field 'numbers' must be a list of 4"),
    ('{"numbers": [1, 2, 3, "x"], "target": 10}', "line 2: field 'numbers' must be an integer"),
    ('{"numbers": [1, 2, 3, 4], "target": 2.5}', "line 2: field 'target' must be an integer"),
    ('{"numbers": [1, 2, 3, 0], "target": 10}', "line 2: numbers must be positive"),
    ('{"numbers": [1, 2, 3, 4], "target": 10', ":2: not valid JSON"),
    ('{"id": "a", "numbers": [1, 2, 3, 5], "target": 10}', "line 2: repeats id 'a' (first on line 1)"),
])
def test_problem_file_errors_name_line_and_field(tmp_path, row, message):
    f = _jsonl(tmp_path / "bad.jsonl", ['{"id": "a", "numbers": [1, 2, 3, 4], "target": 10}', row])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_problems(f)


def _results(path: Path, items, tokens, **extra) -> Path:
    return _jsonl(path, [{"id": it.id, "sequential_tokens": t, "correct": True,
                          "meta": {"numbers": list(it.problem.numbers), "target": it.problem.target}, **extra}
                         for it, t in zip(items, tokens)])


def test_budget_from_matches_by_id(tmp_path, counter):
    items = [KNOWN, UNSOLVABLE, BaselineProblem("easy", Problem((2, 3, 4, 5), 14))]
    costs = search_costs(items, counter, order="heuristic")
    k0, k2 = costs[0].tokens, costs[2].tokens
    # Out of order, an extra id, and a failed record before the good one (as a resumed run leaves them).
    run_dir = tmp_path / "seq-run"
    run_dir.mkdir()
    f = run_dir / "results.jsonl"
    _jsonl(f, [{"id": "easy", "error": "RuntimeError: boom"},
               {"id": "easy", "sequential_tokens": k2 - 1, "correct": False},
               {"id": "other", "sequential_tokens": 5},
               {"id": "none", "sequential_tokens": 10**6, "correct": True},
               {"id": "known", "sequential_tokens": k0, "correct": True},
               {"id": "known", "sequential_tokens": 1, "correct": False}])
    run = read_run_budgets(run_dir, items)  # the folder works too
    assert run.label == "seq-run" and run.budgets == {"known": k0, "none": 10**6, "easy": k2 - 1}
    rows = baseline_rows(costs, [], [run])
    per, mean = rows
    assert per["kind"] == "per_problem" and per["solved"] == 1          # known at its own cost; easy one short
    assert mean["kind"] == "run_mean" and mean["budget"] == pytest.approx((k0 + 10**6 + k2 - 1) / 3)
    assert mean["solved"] == 2
    assert per["model"]["correct"] == 2 and per["model"]["accuracy"] == pytest.approx(2 / 3)
    assert "seq-run" in format_table({"budgets": rows, "search": {"order": "heuristic", "max_branches": 16,
                                                                  "max_value": 1000, "counted": "trace",
                                                                  "tokenizer": "t"},
                                      "cost_tokens": {"n": 3, "solved": 2, "unsolved": 1, "mean": 1.0,
                                                      "median": 1.0, "p90": 1.0, "max": 1}})


def test_budget_from_errors_name_the_id(tmp_path):
    items = [KNOWN, UNSOLVABLE]
    with pytest.raises(ValueError, match="problem 'none' has no record"):
        read_run_budgets(_results(tmp_path / "a.jsonl", [KNOWN], [100]), items)
    f = _jsonl(tmp_path / "b.jsonl", [{"id": "known", "sequential_tokens": 5}, {"id": "none", "error": "boom"}])
    with pytest.raises(ValueError, match="problem 'none' has only failed records"):
        read_run_budgets(f, items)
    f = _jsonl(tmp_path / "c.jsonl", [{"id": "known", "sequential_tokens": 5}, {"id": "none"}])
    with pytest.raises(ValueError, match="problem 'none': field 'sequential_tokens' must be a number"):
        read_run_budgets(f, items)
    other = [KNOWN, BaselineProblem("none", Problem((1, 1, 1, 2), 97))]
    with pytest.raises(ValueError, match="problem 'none' is .* in the run but"):
        read_run_budgets(_results(tmp_path / "d.jsonl", other, [1, 2]), items)
    f = _jsonl(tmp_path / "e.jsonl", ['{"id": "known", "sequential_tokens": 5}', "not json", '{"id": "none"}'])
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_run_budgets(f, items)
    with pytest.raises(FileNotFoundError, match="results file not found"):
        read_run_budgets(tmp_path / "missing.jsonl", items)


def test_run_baseline_summary(countdown_tokenizer_dir):
    s = run_baseline(n=5, seed=1, tokenizer=countdown_tokenizer_dir, budgets=[270, 10**6])
    assert s["problems"]["n"] == 5 and s["problems"]["first_id"] == "countdown-test-1-000000"
    assert s["search"] == {"order": "canonical", "max_branches": 16, "max_value": 1000, "check": "none",
                           "counted": "trace up to and including the Solution line",
                           "tokenizer": str(countdown_tokenizer_dir), "tokenizer_path": str(countdown_tokenizer_dir)}
    c = s["cost_tokens"]
    assert c["n"] == 5 and c["solved"] + c["unsolved"] == 5 and c["min"] <= c["median"] <= c["p90"] <= c["max"]
    assert s["budgets"][1]["solved"] == c["solved"]
    assert sum(s["solved_at_branch"].values()) == c["solved"]
    with pytest.raises(ValueError, match="no budget"):
        run_baseline(n=5, tokenizer=countdown_tokenizer_dir)
    with pytest.raises(ValueError, match="trace.order must be one of"):
        run_baseline(n=5, tokenizer=countdown_tokenizer_dir, budgets=[1], order="best")


def test_command(tmp_path, capsys):
    """The CLI with the default (bundled model's) tokenizer: the table, the JSON, and errors as one line."""
    items = load_problems(n=4, seed=1)
    res = _results(tmp_path / "results.jsonl", items, [300, 400, 500, 600])
    out = tmp_path / "sub" / "baseline.json"
    assert main(["countdown", "baseline", "--n", "4", "--seed", "1", "--budget", "270", "--budget", "1000",
                 "--budget-from", str(res), "--summary-json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| 270 | 4 |" in printed and "450.0 (mean of" in printed and "Full search (canonical order" in printed
    summary = json.loads(out.read_text())
    assert [r["kind"] for r in summary["budgets"]] == ["flat", "flat", "per_problem", "run_mean"]
    assert summary["search"]["tokenizer"] == "countdown-sprint"
    assert summary["budgets"][2]["model"]["correct"] == 4
    # Errors: one line naming what is wrong, exit 2.
    short = _results(tmp_path / "short.jsonl", items[:3], [1, 2, 3])
    assert main(["countdown", "baseline", "--n", "4", "--seed", "1", "--budget-from", str(short),
                 "--no-progress"]) == 2
    assert "problem 'countdown-test-1-000003' has no record" in capsys.readouterr().err
    assert main(["countdown", "baseline", "--n", "4", "--no-progress"]) == 2
    assert "no budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["countdown", "baseline", "--budget", "-3"])
    assert "--budget must be a finite number >= 0" in capsys.readouterr().err

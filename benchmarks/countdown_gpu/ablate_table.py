"""The table of Countdown arms (`arms.sh`, e.g. the check ablation `arms/checks.txt`), or of any Countdown eval runs: one row per run folder.

Besides accuracy it counts the `Solution ...` lines the model wrote (every line of the output: in a SPRINT
trajectory, plans and executions) and how many of them the verifier accepts. That precision is the quantity the
ablation is about: a model that stops at a result that is not the target writes a false Solution line. Two more
columns follow a run from a true Solution line to its answer: how many runs wrote at least one true Solution line and
how many of those were solved, and how many answers are a copy of one of the run's Solution lines (the SPRINT planner
must copy it from an execution far back; the sequential model from the line above). For SPRINT runs the last column
follows the outcome lines (`trace.outcomes`: "Dead Solution ..." after each stage): of the stages whose executions
wrote a Solution line, in how many the outcome line's Solution word names the first such execution, and in how many
of those the expression after it (`trace.outcome_solution`) is that execution's Solution line exactly. The last
column counts the runs whose first line ("Reach T from [numbers sorted]") is not the problem's: a run that changed
its problem before it began (the sixth pair's SPRINT model in 39 of 400, its sequential model in none).

    python benchmarks/countdown_gpu/ablate_table.py RUN_OR_ARM_DIR [...] [--against SEQUENTIAL_RUN]

`--against` adds a second table: each run against a reference run (the sequential partner) on the problems both
have: sequential tokens as a ratio of means, overall and on the third of problems where the reference is longest
(the issue's two token targets), and the problems solved by one and not the other.

A directory with `eval/` inside (an arm, `runs/arms/NAME`: `model/train_metrics.json` next to it) or a run folder
with `results.jsonl`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from sprint.eval.runner import ResultLog, wilson_interval
from sprint.format import Prompt, parse
from sprint.tasks.countdown.expr import check_answer
from sprint.tasks.countdown.problems import Problem
from sprint.tasks.countdown.search import intro_text, solution_lines
from sprint.tasks.countdown.traces import SOLUTION_WORD


def outcome_copies(trajectory: str) -> tuple[int, int, int]:
    """(stages whose executions wrote a Solution line, those whose next outcome line names the first of them, those
    of which also copy its expression exactly) for one SPRINT trajectory."""
    stages = parse(trajectory).stages
    with_solution = named = exact = 0
    for st, nxt in zip(stages, stages[1:]):
        sols = [(solution_lines(e.text) or [None])[-1] for e in st.executions]
        first = next((i for i, x in enumerate(sols) if x), None)
        if first is None:
            continue
        with_solution += 1
        text = "".join(p for p in nxt.plan.parts if not isinstance(p, Prompt)).strip()
        words = text.split("\n", 1)[0].split()
        if SOLUTION_WORD in words and words.index(SOLUTION_WORD) == first:
            named += 1
            after = words[first + 1:first + 2]
            exact += bool(after) and solution_lines(SOLUTION_WORD + " " + after[0]) == [sols[first]]
    return with_solution, named, exact


def row(path: Path) -> str:
    run = path / "eval" if (path / "eval").is_dir() else path
    recs = [r for r in ResultLog(run / "results.jsonl").read() if not r.get("error")]
    n = len(recs)
    if not n:
        return f"| {path.name} | 0 | - | - | - | - | - | - | - | - | - |"
    ok = sum(bool(r["correct"]) for r in recs)
    lo, hi = wilson_interval(ok, n)
    claimed = true = hit = hit_ok = answered = copied = restated_wrong = 0
    outcome = [0, 0, 0]
    for r in recs:
        if r.get("method") == "sprint" and r.get("trajectory"):
            outcome = [a + b for a, b in zip(outcome, outcome_copies(r["trajectory"]))]
        meta = r["meta"]
        restated_wrong += intro_text(Problem(tuple(meta["numbers"]), meta["target"])) not in (r.get("trajectory") or "")
        lines = solution_lines(r.get("trajectory") or "")
        good = [e for e in lines if check_answer(e, meta["numbers"], meta["target"]).ok]
        claimed += len(lines)
        true += len(good)
        hit += bool(good)
        hit_ok += bool(good) and bool(r["correct"])
        if r.get("answer"):
            answered += 1
            copied += r["answer"].strip() in lines
    no_answer = sum(r.get("status") == "no_answer" for r in recs)
    seq = statistics.fmean(r["sequential_tokens"] for r in recs)
    loss = "-"
    metrics = path / "model" / "train_metrics.json"
    if metrics.is_file():
        best = json.loads(metrics.read_text()).get("best_eval_loss")
        loss = f"{best:.4f}" if best is not None else "-"
    prec = f"{true} / {claimed} ({100 * true / claimed:.0f}%)" if claimed else "0 / 0"
    out = f"{outcome[2]} / {outcome[1]} / {outcome[0]}" if outcome[0] else "-"
    return (f"| {path.name} | {n} | {100 * ok / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | {no_answer} | {seq:,.0f} | "
            f"{prec} | {hit_ok} / {hit} | {copied} / {answered} | {loss} | {out} | {restated_wrong} |")


def _results(path: Path) -> dict:
    run = path / "eval" if (path / "eval").is_dir() else path
    return {r["id"]: r for r in ResultLog(run / "results.jsonl").read() if not r.get("error")}


def against(path: Path, ref: dict) -> str:
    """One row of the comparison with the reference run's results `ref` (by problem id)."""
    mine = _results(path)
    ids = [i for i in mine if i in ref]
    if not ids:
        return f"| {path.name} | 0 | - | - | - | - |"
    tokens = lambda rs, sel: statistics.fmean(rs[i]["sequential_tokens"] for i in sel)
    longest = sorted(ids, key=lambda i: -ref[i]["sequential_tokens"])[:max(1, len(ids) // 3)]
    wins = sum(bool(mine[i]["correct"]) and not ref[i]["correct"] for i in ids)
    losses = sum(bool(ref[i]["correct"]) and not mine[i]["correct"] for i in ids)
    return (f"| {path.name} | {len(ids)} | {tokens(mine, ids) / tokens(ref, ids):.2f} "
            f"({tokens(mine, ids):,.0f} / {tokens(ref, ids):,.0f}) | {tokens(mine, longest) / tokens(ref, longest):.2f} "
            f"({len(longest)} problems) | {wins} | {losses} |")


def main(argv: list[str]) -> int:
    ref_path = None
    if "--against" in argv:
        k = argv.index("--against")
        if k + 1 >= len(argv):
            print("--against needs a run folder", file=sys.stderr)
            return 2
        ref_path = Path(argv[k + 1])
        argv = argv[:k] + argv[k + 2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("| arm / run | n | accuracy [95% CI] | no answer | mean sequential tokens | true / written Solution lines "
          "| solved / runs with a true Solution line | answers copying a Solution line / answered | best eval loss "
          "| outcome line: exact copy / names the execution / stages with a Solution | first line wrong |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for a in argv:
        print(row(Path(a)))
    if ref_path is not None:
        ref = _results(ref_path)
        print(f"\nAgainst {ref_path} ({len(ref)} problems):\n")
        print("| arm / run | problems in both | sequential tokens, ratio of means | on the reference's longest third "
              "| solved here, not there | solved there, not here |")
        print("|---|---|---|---|---|---|")
        for a in argv:
            print(against(Path(a), ref))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

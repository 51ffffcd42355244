"""`sprint analyze`: token metrics, validity and accuracy of saved trajectories (calls `sprint.eval.analyze`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "Parse saved trajectories, count their tokens, grade their answers and print a summary table."

DESCRIPTION = HELP + """

PATH is a folder of .txt trajectories or a JSONL file with one trajectory per line (field --field, else the
first of trajectory/text/output/response that is present).

Matching items to --gold records: a file's key is its name without ".txt" and without a leading
"planner_trajectory_" or "base_model_trajectory_"; a JSONL line's key is its --id-field value (else "id", else
its line number); a gold record's key is its --id-field value. In every key "/" becomes "_" and a trailing
".json" is dropped, so gold id "test/algebra/1004.json" matches planner_trajectory_test_algebra_1004.txt.

Accuracy is over all items with a gold record; an item without an answer counts as wrong ("no answer").
Sequential tokens follow the paper: per stage, max over prompts j of (plan tokens up to the end of prompt j +
tokens of execution j); the format's tags are not counted. Tokens are counted with the given Hugging Face
tokenizer (name or local directory), without special tokens.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="folder of .txt trajectories, or a JSONL file")
    p.add_argument("--tokenizer", required=True, metavar="NAME_OR_DIR",
                   help="Hugging Face tokenizer (hub name or local directory) used to count tokens")
    p.add_argument("--gold", metavar="FILE.jsonl", help="gold answers (fields: the id field and 'answer')")
    p.add_argument("--id-field", default="unique_id", help="id field of the gold file and of JSONL input "
                   "(default: unique_id)")
    p.add_argument("--format", dest="fmt", choices=["sprint", "sequential"], default="sprint",
                   help="trajectory format: sprint (plans/executions) or sequential (thinking, then answer)")
    p.add_argument("--field", dest="text_field", metavar="NAME",
                   help="JSONL field holding the trajectory (default: auto-detect)")
    p.add_argument("--executors", type=int, metavar="W",
                   help="also report sequential tokens with W generation streams (W=1 equals total tokens)")
    p.add_argument("--out", metavar="items.jsonl", help="write one JSON object per item")
    p.add_argument("--summary-json", metavar="summary.json", help="write the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def print_summary(result, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    reasons = ", ".join(f"{code} x{n}" for code, n in s.invalid_reasons.items())
    rows = [
        ("n", str(s.n)),
        ("parsed", str(s.parsed)),
        ("invalid", f"{s.invalid}" + (f" ({reasons})" if reasons else "")),
        ("answered", f"{s.answered} ({s.no_answer} no answer)"),
        ("accuracy", "-" if s.accuracy is None else f"{100 * s.accuracy:.1f}% ({s.correct}/{s.graded})"
         + (f", {s.unmatched} without gold" if s.unmatched else "")),
        ("mean sequential tokens", _num(s.mean_sequential_tokens)),
        ("median sequential tokens", _num(s.median_sequential_tokens)),
    ]
    if s.executors:
        rows.append((f"mean sequential tokens, W={s.executors}", _num(s.mean_sequential_tokens_with_executors)))
    rows += [
        ("mean total tokens", _num(s.mean_total_tokens)),
        ("mean stages", _num(s.mean_stages, 2)),
        ("mean prompts per stage", _num(s.mean_prompts_per_stage, 2)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    invalid = [it for it in result.items if not it.parsed]
    for it in invalid[:10]:
        d = it.diagnostics[0]
        console.print(f"  invalid: {it.source}: {d['code']} at char {d['pos']}: {d['message']}", markup=False,
                      highlight=False)
    if len(invalid) > 10:
        console.print(f"  ... and {len(invalid) - 10} more (see --out)")


def run(args) -> int:
    from sprint.eval.analyze import analyze

    if args.executors is not None and args.executors < 1:
        raise ValueError(f"--executors must be >= 1, got {args.executors}")
    result = analyze(args.path, args.tokenizer, gold=args.gold, id_field=args.id_field, fmt=args.fmt,
                     executors=args.executors, text_field=args.text_field, progress=not args.no_progress)
    print_summary(result, f"sprint analyze: {Path(args.path).name} ({args.fmt})")
    if args.out:
        result.write_items(args.out)
    if args.summary_json:
        result.write_summary(args.summary_json)
    return 0

"""`sprint report`: tables and figures from evaluation runs and trajectory folders (calls `sprint.eval.report`)."""

from __future__ import annotations

import argparse

HELP = "Compare runs: a Table-2-style Markdown/JSON table and PNG figures (accuracy vs tokens, stages, reduction)."

DESCRIPTION = HELP + """

Each RUN is one of:
  * a run folder written by `sprint eval` (results.jsonl + settings.json);
  * a folder of such run folders (one `sprint eval` call with several --model/--method pairs);
  * a folder of trajectory .txt files, such as the SPRINT paper's released outputs. These are measured like
    `sprint analyze` does: --tokenizer counts their tokens and --gold grades them. Their method comes from the
    file names (planner_trajectory_* = sprint, base_model_trajectory_* = sequential), else from a --label that
    names a method, else from the text (plans present = sprint).

Written to --out: report.md, report.json and the figures accuracy_vs_sequential_tokens.png (paper Fig. 4),
stages_by_level.png (Fig. 5, needs MATH levels), sequential_token_reduction.png (Fig. 6, needs a sequential run
of the same task; items matched by id) and runtime.png (runs with per-call timings).
"""


def _label(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--label must be NAME=PATH, got {text!r}")
    return name, path


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, folder of runs, or trajectory folder")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, report.json and figures")
    p.add_argument("--tokenizer", metavar="NAME_OR_DIR",
                   help="Hugging Face tokenizer counting the tokens of trajectory folders")
    p.add_argument("--gold", metavar="FILE.jsonl", help="gold answers (and MATH levels) for trajectory folders")
    p.add_argument("--id-field", default="unique_id", help="id field of the gold file (default: unique_id)")
    p.add_argument("--label", action="append", type=_label, default=[], metavar="NAME=PATH",
                   help="display name of an input (repeatable)")
    p.add_argument("--bins", type=int, default=4, help="bins of the reduction figure (default: 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from sprint.eval.report import main_table, write_report

    if args.bins < 1:
        raise ValueError(f"--bins must be >= 1, got {args.bins}")
    report = write_report(args.runs, args.out, labels=dict(args.label), tokenizer=args.tokenizer, gold=args.gold,
                          id_field=args.id_field, bins=args.bins, progress=not args.no_progress)
    print("\n".join(main_table(report)))
    print(f"\nwrote {Path(args.out) / 'report.md'}, report.json and {len(report['figures'])} figure(s)")
    return 0

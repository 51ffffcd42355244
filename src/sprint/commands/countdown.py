"""`sprint countdown data`: build the Countdown data set (calls `sprint.tasks.countdown.data.build_countdown_data`);
`sprint countdown baseline`: what the search alone solves within token budgets (calls
`sprint.tasks.countdown.baseline.run_baseline`)."""

from __future__ import annotations

import argparse

HELP = ("Countdown task: build problems, SPRINT and sequential training traces, and the tokenizer (data); the "
        "search-alone baseline within token budgets (baseline).")

DATA_DESCRIPTION = """Build the Countdown data set from a config file, reproducibly (same config, same bytes).

Writes to --out: train/val/test.jsonl (problems; test problems use only held-out targets), sprint_train.jsonl and
sequential_train.jsonl (the same problems' search traces in the two formats, curation's record shape; also _val),
tokenizer/ (Hugging Face tokenizer with the format's tags as single tokens) and stats.json (drops by reason, token
statistics, the SPRINT / sequential sequential-token ratio, and what the search alone solves within a token
budget on the test problems). Options given here override the config file."""


def register(subparsers) -> None:
    from sprint.tasks.countdown.search import CHECKS, ORDERS
    from sprint.tasks.countdown.tokenizer import NUMBER_MODES

    p = subparsers.add_parser("countdown", help=HELP, description=HELP)
    sub = p.add_subparsers(dest="countdown_command", metavar="SUBCOMMAND")
    d = sub.add_parser("data", help="build problems, training traces of both formats, tokenizer and stats",
                       description=DATA_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--config", default="configs/countdown-data.yaml", metavar="YAML",
                   help="data config (default: %(default)s)")
    d.add_argument("--out", default="runs/countdown/data", metavar="DIR", help="output directory (default: %(default)s)")
    d.add_argument("--seed", type=int, help="override the config's seed")
    for split in ("train", "val", "test"):
        d.add_argument(f"--{split}", type=int, metavar="N", help=f"override the number of {split} problems")
    d.add_argument("--order", choices=ORDERS,
                   help="override trace.order: first moves closest-result-first (heuristic) or in list order "
                        "(canonical: pairs in order, operations + - * /)")
    d.add_argument("--width", type=int, metavar="W", help="override trace.width (prompts per SPRINT stage)")
    d.add_argument("--numbers", choices=NUMBER_MODES,
                   help="override trace.numbers: the tokenizer splits numbers into digits or keeps them whole")
    d.add_argument("--check", choices=CHECKS,
                   help="override trace.check: how a branch checks a last pair's results against the target")
    d.add_argument("--context", type=int, metavar="TOKENS", help="override trace.context (longer records are dropped)")
    d.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes that build the traces (same output for any N; default: %(default)s)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train=1000 trace.executor_pick=uniform (the options above win)")
    d.set_defaults(func=_data)
    _register_baseline(sub)
    p.set_defaults(func=lambda args: p.print_help() or 0)


BASELINE_DESCRIPTION = """What the depth-first search of the training data solves on its own within a budget of
sequential tokens: for each problem, the search's sequential trace (rendered exactly as the training data renders it)
is counted with the models' tokenizer up to and including its Solution line; the search solves the problem within
budget B iff that count is <= B (a problem it cannot solve within --max-branches first moves is never solved).

Problems: the held-out test problems `sprint eval --task countdown --n N --seed S` uses (same ids and numbers), or
--data FILE.jsonl (numbers, target, optional id: the format of test.jsonl; with --n, the seeded sample eval takes).

Budgets: --budget N (repeatable) for flat budgets, and/or --budget-from RESULTS.jsonl (an eval run's results file or
run folder, repeatable): each problem gets the sequential tokens that run spent on it (matched by id; every problem
must be there), and the run's mean is reported as a flat budget too, next to the run's own accuracy.

Prints one row per budget (n, solved, accuracy with a 95% Wilson interval) and the token distribution of the full
search; --summary-json writes the same as JSON."""


def _budget(text: str) -> float:
    try:
        b = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be a number of tokens, got {text!r}") from None
    if not b >= 0 or b == float("inf"):
        raise argparse.ArgumentTypeError(f"--budget must be a finite number >= 0, got {text!r}")
    return int(b) if b.is_integer() else b


def _register_baseline(sub) -> None:
    from sprint.tasks.countdown.problems import DEFAULT_MAX_VALUE
    from sprint.tasks.countdown.search import CHECKS, DEFAULT_CHECK, DEFAULT_MAX_BRANCHES, DEFAULT_ORDER, ORDERS

    b = sub.add_parser("baseline", help="what the search alone solves within token budgets (vs a model's run)",
                       description=BASELINE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--data", metavar="FILE.jsonl", help="problems file (default: generated held-out test problems)")
    b.add_argument("--n", type=int, metavar="N",
                   help="number of problems (default: 1000 generated; with --data: all of the file)")
    b.add_argument("--seed", type=int, default=0, help="seed of the generated problems, as sprint eval's "
                                                       "(default: %(default)s)")
    b.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer directory or bundled model name (default: the countdown-sprint model's)")
    b.add_argument("--order", choices=ORDERS, default=DEFAULT_ORDER,
                   help="first-move order of the search (default: %(default)s, the data's)")
    b.add_argument("--max-branches", type=int, default=DEFAULT_MAX_BRANCHES, metavar="N",
                   help="first moves the search may explore (default: %(default)s, the data's)")
    b.add_argument("--max-value", type=int, default=DEFAULT_MAX_VALUE, metavar="N",
                   help="larger intermediate values are pruned (default: %(default)s, the data's)")
    b.add_argument("--budget", type=_budget, action="append", default=[], metavar="TOKENS",
                   help="a flat budget of sequential tokens (repeatable)")
    b.add_argument("--budget-from", action="append", default=[], metavar="RESULTS.jsonl",
                   help="per-problem budgets from a sprint eval run's results file or folder (repeatable)")
    b.add_argument("--with-answer", action="store_true",
                   help="also count the \\boxed{} answer the sequential traces write after the thinking (as sprint "
                        "eval counts a model's sequential tokens)")
    b.add_argument("--check", choices=CHECKS, default=DEFAULT_CHECK,
                   help="how the counted trace checks last-pair results against the target, as data made with that "
                        "trace.check writes it (default: %(default)s, the data's)")
    b.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON here")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_baseline)


def _baseline(args) -> int:
    import json
    from pathlib import Path

    from sprint.tasks.countdown.baseline import format_table, run_baseline

    if not args.budget and not args.budget_from:
        raise ValueError("no budget: give --budget N and/or --budget-from RESULTS.jsonl")
    if args.max_branches < 1:
        raise ValueError(f"--max-branches must be >= 1, got {args.max_branches}")
    summary = run_baseline(data=args.data, n=args.n, seed=args.seed, tokenizer=args.tokenizer, order=args.order,
                           max_branches=args.max_branches, max_value=args.max_value, budgets=args.budget,
                           budget_from=args.budget_from, with_answer=args.with_answer,
                           check=args.check, progress=not args.no_progress)
    print(format_table(summary), end="")
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"summary in {path}")
    return 0


def _data(args) -> int:
    import dataclasses
    import time

    from sprint.tasks.countdown.data import build_countdown_data, load_data_config

    cfg = load_data_config(args.config, args.overrides)
    overrides = {k: getattr(args, k) for k in ("seed", "train", "val", "test") if getattr(args, k) is not None}
    trace = {k: getattr(args, k) for k in ("order", "width", "numbers", "check", "context")
             if getattr(args, k) is not None}
    cfg = dataclasses.replace(cfg, **overrides, trace=dataclasses.replace(cfg.trace, **trace))
    start = time.perf_counter()
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    stats = build_countdown_data(cfg, args.out, progress=not args.no_progress, workers=args.workers)
    train = stats["splits"]["train"]
    ratio = train["ratio"]
    print(f"wrote {args.out}: {train['kept']} of {train['problems']} training problems kept "
          f"(dropped: {train['dropped'] or 'none'}; {train['records']['sprint_executor']} executor records besides "
          f"the SPRINT ones); sequential tokens: sequential "
          f"{train['sequential_tokens']['sequential'].get('mean')}, SPRINT {train['sequential_tokens']['sprint'].get('mean')} "
          f"(ratio of means {ratio.get('all', {}).get('ratio_of_means')}, longest third "
          f"{ratio.get('longest_third', {}).get('ratio_of_means')}); {time.perf_counter() - start:.1f} s")
    return 0

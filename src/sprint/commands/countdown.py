"""`sprint countdown data`: build the Countdown data set (calls `sprint.tasks.countdown.data.build_countdown_data`)."""

from __future__ import annotations

import argparse

HELP = "Countdown task: build problems, SPRINT and sequential training traces, and the tokenizer (data)."

DATA_DESCRIPTION = """Build the Countdown data set from a config file, reproducibly (same config, same bytes).

Writes to --out: train/val/test.jsonl (problems; test problems use only held-out targets), sprint_train.jsonl and
sequential_train.jsonl (the same problems' search traces in the two formats, curation's record shape; also _val),
tokenizer/ (Hugging Face tokenizer with the format's tags as single tokens) and stats.json (drops by reason, token
statistics, the SPRINT / sequential sequential-token ratio, and what the search alone solves within a token
budget on the test problems). Options given here override the config file."""


def register(subparsers) -> None:
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
    d.add_argument("--order", choices=("heuristic", "canonical"),
                   help="override trace.order: first moves closest-result-first (heuristic) or in list order "
                        "(canonical: pairs in order, operations + - * /)")
    d.add_argument("--width", type=int, metavar="W", help="override trace.width (prompts per SPRINT stage)")
    d.add_argument("--numbers", choices=("digits", "whole"),
                   help="override trace.numbers: the tokenizer splits numbers into digits or keeps them whole")
    d.add_argument("--context", type=int, metavar="TOKENS", help="override trace.context (longer records are dropped)")
    d.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes that build the traces (same output for any N; default: %(default)s)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_data)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _data(args) -> int:
    import dataclasses
    import time

    from sprint.tasks.countdown.data import build_countdown_data, load_data_config

    cfg = load_data_config(args.config)
    overrides = {k: getattr(args, k) for k in ("seed", "train", "val", "test") if getattr(args, k) is not None}
    trace = {k: getattr(args, k) for k in ("order", "width", "numbers", "context") if getattr(args, k) is not None}
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

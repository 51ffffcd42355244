"""`sprint demo`: the bundled Countdown models, SPRINT then sequential, on one problem, offline on the CPU."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="solve a Countdown problem with the bundled SPRINT and sequential models",
                       description="Solve one Countdown problem offline on the CPU with the bundled SPRINT model "
                       "(stages and executors shown live, side by side), then with the bundled sequential model; "
                       "compare answers, sequential tokens and wall-clock.")
    p.add_argument("question", nargs="?", help='a Countdown question in plain words, e.g. "Using the numbers '
                   '[19, 36, 55, 7], create an equation that equals 65." (default: a held-out test problem)')
    p.add_argument("--seed", type=int, default=0, help="which held-out test problem when no question is given")
    p.add_argument("--no-live", action="store_true", help="no live view (print only the results)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from sprint.inference.demo import run_demo

    run_demo(args.question, args.seed, live=not args.no_live)
    return 0

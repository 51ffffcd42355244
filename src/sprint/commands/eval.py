"""`sprint eval`: run SPRINT or a baseline over a benchmark, resumably, and summarize (calls `sprint.eval.runner`)."""

from __future__ import annotations

import argparse

HELP = "Evaluate methods on MATH-500, GPQA-diamond or Countdown: accuracy (95%% CI), sequential/total tokens, time."

DESCRIPTION = HELP + """

Methods: sprint (planner + parallel executors), sequential (one chain of thought), sc (self-consistency:
parallel samples, majority answer), sot (skeleton-of-thought). --model and --method may be repeated: lists of
equal length pair up (`--model A --method sprint --model B --method sequential`), and a list given once is
shared (`--model A --method sprint --method sequential`). All pairs run one after the other on the same items
with the same decoding settings; each gets OUT/<model>-<method>/ and OUT/summary.md puts them side by side.
With one pair, OUT is the run folder itself.

--base-url points at an OpenAI-compatible server (vLLM, SGLang); without it the model runs in-process.

A run folder holds settings.json (everything needed to reproduce the run: task and items, model, method,
prompts, decoding settings, limits, seeds, package versions, Python, platform, CPU/GPU, git commit, command),
results.jsonl (one graded record per item, written as soon as it is done) and summary.json. Rerunning the same
command resumes: finished items are skipped, failed ones are retried; changed settings are refused.

Method settings beyond the shared flags: --set sprint.FIELD=VALUE (SprintConfig: max_stages, max_plan_tokens,
max_exec_tokens, eager, executor_retries, wall_clock_s, ...) or --set baseline.FIELD=VALUE (BaselineConfig:
samples, max_points, skeleton_max_tokens, ...).
"""

TASK_SOURCES = "math500: JSONL with problem/answer/unique_id (default: hub HuggingFaceH4/MATH-500); " \
               "gpqa: the official CSV (default: hub Idavidrein/gpqa, gated); countdown: generated test problems"


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set must be KEY=VALUE, got {text!r}")
    return key.strip(), value


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=["math500", "gpqa", "countdown"], help="benchmark")
    p.add_argument("--method", action="append", required=True, choices=["sprint", "sequential", "sc", "sot"],
                   help="method (repeatable, pairs with --model)")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="model directory or name (repeatable); countdown-sprint / countdown-sequential name the "
                        "bundled Countdown models")
    p.add_argument("--base-url", action="append", default=[], metavar="URL",
                   help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (once, or once per model)")
    p.add_argument("--tokenizer", metavar="NAME_OR_DIR",
                   help="tokenizer whose chat template lays out prompts for a server (default: the model's)")
    p.add_argument("--data", metavar="PATH", help=f"local task data. {TASK_SOURCES}")
    p.add_argument("--question-order", choices=["given", "sorted"],
                   help="countdown: list each question's numbers as generated or largest first, the order of the "
                        "traces' first line (the same problems). Default: sorted when every model is a bundled one "
                        "(they were trained so), else given")
    p.add_argument("--n", type=int, metavar="N", help="number of items (default: all; countdown: 1000)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the item sample (with --n), Countdown generation and sampling (default: 0)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; reused to resume)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="questions in flight at once (default: 8; use 1 to time each question without contention)")
    p.add_argument("--max-tokens", type=int, metavar="N", help="token limit per generation (all methods)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0; sc: 0.7)")
    p.add_argument("--top-p", type=float, help="nucleus sampling p (default 1)")
    p.add_argument("--set", dest="overrides", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="a method setting, e.g. sprint.max_stages=8 or baseline.samples=16 (repeatable)")
    p.add_argument("--backend-mode", choices=["exact", "fast", "graphs"],
                   help="in-process backend: exact (batch-invariant results; the CPU default), fast (batched "
                        "attention and linears, about 2x the exact mode's throughput on a CPU; no CUDA graphs) or "
                        "graphs (fast, decode steps replayed from CUDA graphs; CUDA only, the GPU default)")
    p.add_argument("--max-batch", type=int, metavar="N",
                   help="in-process backend: sequences computed at once (default 128 on a GPU, 8 on a CPU)")
    p.add_argument("--decode-steps", type=int, metavar="N",
                   help="in-process backend with CUDA graphs: greedy decode steps per graph replay (default 8; 1: "
                        "one at a time)")
    p.add_argument("--summary-json", metavar="PATH", help="also write the summary here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _backend_options(args) -> dict:
    """The in-process backend's keywords the user set (none by default, so settings.json stays as before)."""
    options = {}
    if args.backend_mode is not None:
        options["exact"] = args.backend_mode == "exact"
        if args.backend_mode != "exact":   # named, so a run's settings say whether it used CUDA graphs
            options["cuda_graphs"] = args.backend_mode == "graphs"
    if args.max_batch is not None:
        if args.max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
        options["max_batch"] = args.max_batch
    if args.decode_steps is not None:
        if args.decode_steps < 1:
            raise ValueError(f"--decode-steps must be >= 1, got {args.decode_steps}")
        options["decode_steps"] = args.decode_steps
    return options


def run(args) -> int:
    from pathlib import Path

    from sprint.eval.runner import EvalConfig, run_eval, summary_table

    if args.question_order is not None and args.task != "countdown":
        raise ValueError(f"--question-order is a countdown option (the task is {args.task})")
    task_options = {}
    if args.task == "countdown":
        from sprint.models import countdown_question_order

        order = args.question_order or countdown_question_order(args.model or [None])
        if order != "given":
            task_options["question_order"] = order
    cfg = EvalConfig(task=args.task, out=Path(args.out), methods=args.method, models=args.model or [None],
                     base_urls=args.base_url, data=args.data, task_options=task_options, n=args.n, seed=args.seed,
                     concurrency=args.concurrency, tokenizer=args.tokenizer, max_tokens=args.max_tokens,
                     temperature=args.temperature, top_p=args.top_p, overrides=dict(args.overrides),
                     backend_options=_backend_options(args),
                     summary_json=Path(args.summary_json) if args.summary_json else None,
                     progress=not args.no_progress)
    summary = run_eval(cfg)
    print(summary_table(summary.get("runs", [summary])), end="")
    print(f"results in {cfg.out}")
    return 0

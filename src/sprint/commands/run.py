"""`sprint run`: answer one question live, or a JSONL file of questions as a resumable batch
(calls `sprint.inference.app.run_command`)."""

from __future__ import annotations

import argparse

HELP = "Run SPRINT (or a baseline) on one question, shown live, or on a JSONL file of questions."

DESCRIPTION = HELP + """

One question:  sprint run "What is 2^10?" --model PATH [--base-url URL ...]
A batch:       sprint run --input math500.jsonl --out results.jsonl [--concurrency 8]

--model is a local model directory (run in-process with transformers) or, with --base-url, the model name an
OpenAI-compatible server (vLLM, SGLang) serves; several --base-url spread the calls over several servers. The API
key is read from the OPENAI_API_KEY environment variable and never written anywhere.

Batch output: one JSON object per question, appended as soon as it is finished (flushed to disk). Rerunning the
same command skips the ids already in --out, so a crashed run resumes where it stopped.

Methods: sprint (planner + parallel executors), sequential (one chain of thought), sc (self-consistency: --samples
chains, majority answer), sot (skeleton-of-thought).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", nargs="?", metavar="QUESTION", help="the question (omit with --input)")
    p.add_argument("--model", metavar="PATH_OR_NAME", help="local model directory, or the served model name")
    p.add_argument("--base-url", dest="base_urls", action="append", default=[], metavar="URL",
                   help="OpenAI-compatible server (repeat for several)")
    p.add_argument("--tokenizer", metavar="NAME_OR_DIR",
                   help="tokenizer that decides the prompt layout (default: the model's)")
    p.add_argument("--method", default="sprint", choices=["sprint", "sequential", "sc", "sot"])
    p.add_argument("--out", metavar="FILE.jsonl", help="append results here (required with --input)")
    g = p.add_argument_group("batch")
    g.add_argument("--input", metavar="FILE.jsonl", help="questions, one JSON object per line")
    g.add_argument("--concurrency", type=int, default=8, help="questions in flight at once (default 8)")
    g.add_argument("--question-field", help="field holding the question (default: the first of problem, question, "
                                            "prompt that the file has)")
    g.add_argument("--id-field", help="field holding the id (default: unique_id, else id)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = p.add_argument_group("generation (unset = the method's default)")
    s.add_argument("--no-eager", action="store_true", help="sprint: start executors only when the plan is complete")
    s.add_argument("--max-stages", type=int, help="sprint: stages including the final answer (default 12)")
    s.add_argument("--max-plan-tokens", type=int, help="sprint: tokens per plan (default 8000)")
    s.add_argument("--max-exec-tokens", type=int, help="sprint: tokens per execution (default 8000)")
    s.add_argument("--max-answer-tokens", type=int, help="sprint: tokens of a forced final answer (default 2048)")
    s.add_argument("--max-tokens", type=int, help="sequential/sc: tokens per generation (default 16000)")
    s.add_argument("--samples", type=int, help="sc: number of samples (default 8)")
    s.add_argument("--temperature", type=float, help="sampling temperature (sprint: planner and executors)")
    s.add_argument("--executor-temperature", type=float, help="sprint: executors' temperature")
    s.add_argument("--top-p", type=float, help="nucleus sampling")
    s.add_argument("--seed", type=int, help="base seed (each call derives its own)")
    s.add_argument("--wall-clock", type=float, metavar="SECONDS", help="time budget per question")
    p.set_defaults(func=run)


def run(args) -> int:
    from sprint.inference.app import RunOptions, run_command

    settings = {"max_stages": args.max_stages, "max_plan_tokens": args.max_plan_tokens,
                "max_exec_tokens": args.max_exec_tokens, "max_answer_tokens": args.max_answer_tokens,
                "max_tokens": args.max_tokens, "samples": args.samples,
                "temperature": args.temperature, "executor_temperature": args.executor_temperature,
                "top_p": args.top_p, "seed": args.seed, "wall_clock_s": args.wall_clock,
                "eager": False if args.no_eager else None}
    opts = RunOptions(question=args.question, input=args.input, out=args.out, model=args.model,
                      base_urls=args.base_urls, method=args.method, settings=settings, concurrency=args.concurrency,
                      question_field=args.question_field, id_field=args.id_field, tokenizer=args.tokenizer,
                      progress=not args.no_progress)
    return run_command(opts)

"""`sprint curate`: turn sequential reasoning traces into SPRINT training data (calls `sprint.curate`)."""

from __future__ import annotations

import argparse
import json

HELP = "Curate SPRINT training data from sequential reasoning traces (run), or pack extracted steps (pack)."

RUN_DESCRIPTION = """Curate traces into SPRINT and sequential chat records.

INPUT is a JSONL file, a Hugging Face dataset name or a local dataset directory (several may be given). Per trace:
check the final answer against the gold answer (math-verify), number the trace's lines and ask the extraction model
for steps (JSON with line ranges), ask the DAG model which earlier steps each step uses, fold short executions,
pack into stages, keep traces with ratio >= --min-ratio and at most --max-stages stages, and render.

Outputs in --out: records.jsonl (two records per kept trace: format "sprint" and "sequential", with chat
"messages"), rejects.jsonl (id, step, code, reason), summary.json; LLM answers are cached in --cache (default
OUT/cache), so an interrupted run resumes where it stopped.

Fields: the paper's data uses --question-field problem --trace-field thought --answer-field solution
--solution-field solution (its final answer comes from the solution, as in the release); for
../shared/data/r1_traces use --question-field problem --trace-field full_response --answer-field ground_truth
(the text after the thinking holds the model's boxed answer)."""

PACK_DESCRIPTION = """Pack steps that were already extracted and print one JSON object:
{"stages": {"<step id>": <stage>, ...}, "ratio": <float>, "kept": <bool>, "reason": <str or null>}.

--steps is our JSON ({"steps": [...]} with texts, or with plan_lines/execution_lines/comment_lines and --trace), or
the paper's recorded step-extraction answer (markdown with line ranges); --dag is a parent dictionary
{"<id>": [parent ids]}."""


def register(subparsers) -> None:
    p = subparsers.add_parser("curate", help=HELP, description=HELP)
    sub = p.add_subparsers(dest="curate_command", metavar="SUBCOMMAND")

    r = sub.add_parser("run", help="curate traces with an OpenAI-compatible LLM", description=RUN_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="JSONL file, dataset name or dataset directory")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory")
    r.add_argument("--cache", metavar="DIR", help="LLM answer cache (default: OUT/cache)")
    r.add_argument("--question-field", default="problem")
    r.add_argument("--trace-field", default="thought",
                   help="field with the trace; text after a closing think tag is taken as the solution")
    r.add_argument("--answer-field", default="solution",
                   help="gold answer (bare, or a solution whose last \\boxed{} is the answer)")
    r.add_argument("--solution-field", help="field whose last boxed paragraph becomes the final answer "
                   "(default: the text after the trace's thinking, else the trace)")
    r.add_argument("--id-field", help="field with a unique id (default: file name and line number)")
    r.add_argument("--split", default="train", help="dataset split (Hugging Face inputs)")
    r.add_argument("--subset", help="dataset configuration (Hugging Face inputs)")
    r.add_argument("--limit", type=int, help="curate only the first N inputs")
    r.add_argument("--base-url", required=True, nargs="+", metavar="URL",
                   help="OpenAI-compatible endpoint(s), e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    r.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    r.add_argument("--extract-model", default="gpt-4o", help="model for step extraction (paper: gpt-4o)")
    r.add_argument("--dag-model", default="gpt-4o-mini", help="model for the dependency DAG (paper: gpt-4o-mini)")
    r.add_argument("--max-tokens", type=int, default=8000, help="max tokens of each LLM answer")
    r.add_argument("--temperature", type=float, default=0.0)
    r.add_argument("--timeout", type=float, default=600.0, help="read timeout of each LLM call, seconds")
    r.add_argument("--concurrency", type=int, default=8, help="LLM calls in flight at most")
    r.add_argument("--max-attempts", type=int, default=3, help="asks per LLM step, re-asks quoting the error")
    r.add_argument("--fold-threshold", type=int, default=3,
                   help="fold an execution spanning lines a..b into its plan when b - a < this (released code: 3; "
                        "0 folds nothing)")
    r.add_argument("--width", type=int, help="at most this many prompts per stage")
    r.add_argument("--min-ratio", type=float, default=1.5, help="keep traces with executions/stages >= this")
    r.add_argument("--max-stages", type=int, default=11, help="keep traces with at most this many stages")
    r.add_argument("--no-answer-check", action="store_true", help="do not require a correct final answer")
    r.add_argument("--drop-comments", action="store_true",
                   help="leave comment lines out of the records (as the released code does)")
    r.add_argument("--no-executor-records", action="store_true",
                   help="write only the full SPRINT and sequential records, no per-prompt executor records")
    r.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="USD per 1M input and output tokens of MODEL, for the cost report (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=run_cmd)

    k = sub.add_parser("pack", help="pack extracted steps with a DAG and print the stages as JSON",
                       description=PACK_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--steps", required=True, metavar="FILE", help="steps: our JSON or the paper's markdown answer")
    k.add_argument("--dag", required=True, metavar="FILE", help="parent dictionary JSON")
    k.add_argument("--trace", metavar="FILE", help="the trace the line ranges refer to")
    k.add_argument("--inline", metavar="FILE", help="the paper's component_inline file (texts for markdown steps)")
    k.add_argument("--fold-threshold", type=int, default=3)
    k.add_argument("--width", type=int)
    k.add_argument("--min-ratio", type=float, default=1.5)
    k.add_argument("--max-stages", type=int, default=11)
    k.set_defaults(func=pack_cmd)

    y = sub.add_parser("replay", help="replay the released SPRINT curation artifacts and compare",
                       description="Pack the released step-extraction answers and DAGs, and compare with the "
                                   "released training samples.")
    y.add_argument("--reference", required=True, metavar="DIR",
                   help="e.g. ../shared/fixtures/sprint_reference/curation")
    y.add_argument("--fold-threshold", type=int, default=3)
    y.set_defaults(func=replay_cmd)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def run_cmd(args) -> int:
    from sprint.curate.llm import parse_price
    from sprint.curate.pipeline import FieldMap, run_openai

    summary = run_openai(
        args.inputs, args.out, base_url=args.base_url, extract_model=args.extract_model, dag_model=args.dag_model,
        api_key_env=args.api_key_env, max_tokens=args.max_tokens, temperature=args.temperature,
        timeout_s=args.timeout, prices=dict(parse_price(s) for s in args.price), cache_dir=args.cache,
        fields=FieldMap(question=args.question_field, trace=args.trace_field, answer=args.answer_field,
                        solution=args.solution_field, id=args.id_field),
        split=args.split, subset=args.subset, limit=args.limit, concurrency=args.concurrency,
        max_attempts=args.max_attempts, fold_threshold=args.fold_threshold, width=args.width,
        min_ratio=args.min_ratio, max_stages=args.max_stages, check_answer=not args.no_answer_check,
        comments=not args.drop_comments, executor_records=not args.no_executor_records,
        progress=not args.no_progress)
    print(summary.text())
    return 0


def pack_cmd(args) -> int:
    from sprint.curate.artifacts import pack_files

    packing = pack_files(args.steps, args.dag, trace_path=args.trace, inline_path=args.inline,
                         fold_threshold=args.fold_threshold, width=args.width, min_ratio=args.min_ratio,
                         max_stages=args.max_stages)
    print(json.dumps(packing.to_json()))
    return 0


def replay_cmd(args) -> int:
    from sprint.curate.replay import replay_report

    print(replay_report(args.reference, fold_threshold=args.fold_threshold))
    return 0

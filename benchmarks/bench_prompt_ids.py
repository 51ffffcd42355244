"""Tokenizing a SPRINT solve's prompts: whole (the tokenizer on each prompt) against `PromptIds` (cached pieces
between added tokens, the in-process backend's), on the prompts that recorded solves sent.

For each recorded SPRINT trajectory (a `results.jsonl` of `sprint eval --method sprint`), the prompts are rebuilt in
the order the orchestrator sends them: each stage's planner prompt, its executors' prompts, then the executions
handed to the backend as they finish (all but the stage's last; `PromptIds` only). Reported per kind: calls and mean
milliseconds. Both ways give the same ids (checked on every prompt).

    python benchmarks/bench_prompt_ids.py runs/eval_gpu_latency_n100_s1/countdown-sprint-sprint/results.jsonl --n 40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def prompts(record: dict) -> list[tuple[str, str]]:
    """(kind, text) of one solve's prompts in the order they are sent (see the module doc)."""
    from sprint.format import incremental as F
    from sprint.format import parse, tags as T
    from sprint.format.trajectory import render_execution

    text = record["trajectory"]
    think = T.open_tag(T.THINK) + "\n"
    start = text[:text.index(think) + len(think)]
    traj = parse(text)
    out = []
    for k, stage in enumerate(traj.stages):
        context = F.stage_context(start, traj.stages[:k])
        out.append(("planner", context))
        if stage.plan is None:
            continue
        for j in range(1, len(stage.plan.prompts) + 1):
            out.append(("executor", F.executor_context(context, stage.index, stage.plan, j)))
        out.extend(("execution", render_execution(e)) for e in stage.executions[:-1])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="results.jsonl of a SPRINT eval run")
    ap.add_argument("--n", type=int, default=40, help="solves to replay")
    ap.add_argument("--model", default="countdown-sprint", help="whose tokenizer (a bundled name or a directory)")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    from sprint.backends.prompt_ids import PromptIds
    from sprint.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(args.model)))
    with args.results.open() as f:
        solves = [prompts(json.loads(line)) for line, _ in zip(f, range(args.n))]
    ids = PromptIds(tokenizer, keep=64, verify=0)
    times: dict[str, dict[str, list[float]]] = {"whole": {}, "pieces": {}}
    for sent in solves:
        for kind, text in sent:
            if kind != "execution":
                start = time.perf_counter()
                whole = list(tokenizer(text)["input_ids"])
                times["whole"].setdefault(kind, []).append(time.perf_counter() - start)
            start = time.perf_counter()
            got = ids.encode(text, True)
            times["pieces"].setdefault(kind, []).append(time.perf_counter() - start)
            if kind != "execution" and got != whole:
                raise SystemExit(f"pieces differ from a whole encoding: {text[:80]!r}...")
    for way, kinds in times.items():
        print(json.dumps({"way": way, "solves": len(solves), **{
            kind: {"calls": len(t), "mean_ms": round(1000 * sum(t) / len(t), 3)} for kind, t in kinds.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

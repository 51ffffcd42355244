"""The Countdown SPRINT executors under teacher forcing: given the search's own context for a branch, does the model
write `Solution` exactly when the branch reaches the target, on held-out test targets?

For each of the first N test problems (`sprint eval --task countdown --n N --seed S` takes the same ones), the
search's SPRINT trace is built with the shipped data config (every branch, not the per-stage cap of the training
data), and the model writes each branch's execution greedily from the exact context the orchestrator gives an
executor (in-process backend, CPU). Each execution is scored against the search's: does the branch really reach the
target (a Solution line in the record), did the model write a Solution line, and is that line a correct answer?

    python benchmarks/countdown_executor_probe.py --model countdown-sprint --n 100

Why: 13% of the third pair's Solution lines were true on 1,000 test problems, and with `executor_pick:
solution_first` 56% of its executor training records end in one while 20% of all executions do
(`trace.executor_pick`). This measures the false stops of the executors alone, without the planner's errors.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time

from sprint.backends.base import GenerationParams
from sprint.backends.transformers_backend import TransformersBackend
from sprint.curate.records import parse_executor_record_id
from sprint.format import tags as T
from sprint.models import resolve_model
from sprint.tasks.countdown.data import load_data_config
from sprint.tasks.countdown.expr import check_answer
from sprint.tasks.countdown.loader import load_countdown
from sprint.tasks.countdown.search import BRANCH_PREFIX as BRANCH, solution_lines
from sprint.tasks.countdown.traces import build_records, build_traces
from sprint.train.data import build_texts, parse_record


def usable_traces(n: int, seed: int, config: str):
    """(item, problem, traces) of the first `n` test problems whose search succeeds, traced with `config`."""
    trace = load_data_config(config).trace
    for item in load_countdown("test", n, seed):
        t = build_traces(item.problem, trace)
        if t.reason is None:
            yield item, item.problem, t


def executor_cases(n: int, seed: int, config: str, tokenizer=None) -> list[dict]:
    """One dict per branch of the first `n` test problems' SPRINT traces: its prompt (the executor's exact input),
    the record's execution, the stop strings, the problem's numbers and target."""
    out = []
    for item, p, t in usable_traces(n, seed, config):
        for rec in build_records(item.id, t)[2:]:
            prompt, completion = build_texts(parse_record(rec, rec["id"]), tokenizer)
            _, stage, index = parse_executor_record_id(rec["id"])
            out.append({"id": rec["id"], "prompt": prompt, "ref": completion, "numbers": list(p.numbers),
                        "target": p.target, "stop": T.executor_stop_strings(stage, index)})
    return out


def sequential_cases(n: int, seed: int, config: str, tokenizer=None) -> list[dict]:
    """The same for a sequential model: one dict per branch of the sequential trace (which stops at the first
    solution), its prompt being the trace up to and including the branch's `Explore ...` line."""
    out = []
    for item, p, t in usable_traces(n, seed, config):
        rec = build_records(item.id, t, executor_records=False)[1]
        prompt, completion = build_texts(parse_record(rec, rec["id"]), tokenizer)
        think_end = completion.index(T.close_tag(T.THINK))
        starts = [i for i in range(think_end) if completion.startswith(BRANCH, i) and (i == 0 or
                                                                                       completion[i - 1] == "\n")]
        for k, i in enumerate(starts):
            body = completion.index("\n", i) + 1
            end = starts[k + 1] if k + 1 < len(starts) else think_end
            out.append({"id": f"{item.id}#branch-{k + 1}", "prompt": prompt + completion[:body],
                        "ref": completion[body:end], "numbers": list(p.numbers), "target": p.target,
                        "stop": ["\n" + BRANCH, T.close_tag(T.THINK)]})
    return out


def score(cases: list[dict], outs: list[str]) -> dict:
    """Confusion of the model's Solution lines against the branches that really reach the target."""
    counts = collections.Counter()
    for c, text in zip(cases, outs):
        hit = bool(solution_lines(c["ref"]))
        said = solution_lines(text)
        true = [s for s in said if check_answer(s, c["numbers"], c["target"]).ok]
        counts[("branch reaches the target" if hit else "branch is a dead end",
                "model wrote a Solution" if said else "model wrote none")] += 1
        counts["Solution lines written"] += len(said)
        counts["Solution lines true"] += len(true)
        ref = c["ref"].strip()
        for stop in c["stop"]:  # the record's execution ends with its closing tag, where generation stops
            ref = ref.removesuffix(stop).strip()
        counts["execution exactly as the record"] += text.strip() == ref
    written = counts["Solution lines written"]
    return {"branches": len(cases), **{" / ".join(k) if isinstance(k, tuple) else k: v
                                       for k, v in sorted(counts.items(), key=str)},
            "precision of the Solution lines": round(counts["Solution lines true"] / written, 3) if written else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="countdown-sprint", help="bundled name or model directory")
    ap.add_argument("--n", type=int, default=100, help="test problems (all their branches are probed)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the test problems, as sprint eval's")
    ap.add_argument("--config", default="configs/countdown-data.yaml", help="data config the traces are built with")
    ap.add_argument("--max-tokens", type=int, default=512, help="per execution (the bundled limit)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sequential", action="store_true",
                    help="probe a sequential model on the branches of the sequential traces instead")
    ap.add_argument("--dump", metavar="PATH", help="also write one JSON line per branch: id, the record's execution "
                                                   "(ref), the model's (text), its finish reason")
    args = ap.parse_args()
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    backend = TransformersBackend(resolve_model(args.model), device=args.device)
    cases = (sequential_cases if args.sequential else executor_cases)(args.n, args.seed, args.config,
                                                                        backend.tokenizer)

    async def run():
        return await asyncio.gather(*(backend.generate(c["prompt"], GenerationParams(max_tokens=args.max_tokens,
                                                                                     stop=c["stop"]))
                                      for c in cases))

    start = time.perf_counter()
    done = asyncio.run(run())
    outs = [o.text for o in done]
    if args.dump:
        with open(args.dump, "w") as f:
            for c, o in zip(cases, done):
                f.write(json.dumps({"id": c["id"], "ref": c["ref"], "text": o.text, "finish": o.finish_reason,
                                    "numbers": c["numbers"], "target": c["target"]}) + "\n")
    print(json.dumps({"model": args.model, "problems": args.n, "seed": args.seed, **score(cases, outs),
                      "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()

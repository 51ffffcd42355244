"""How the layout of a Countdown SPRINT stage moves its critical path, on the data alone (no model).

An executor starts once the planner has written its prompt, so a stage's critical path is the longest chain of
planner tokens up to a prompt plus that prompt's execution (`sprint.format.metrics.StageCost.latency`). This script
builds the traces of held-out problems with a data config (`sprint countdown data`'s) and reports the mean
sequential tokens of the SPRINT traces against the sequential traces' for layouts of each stage:

* `as written`: the traces as the config makes them;
* `longest first` / `shortest first`: each stage's executions reordered by length (the first an oracle: the
  planner cannot know the lengths before the branches are searched; the second the worst order);
* `split K` (`--split K ...`): each branch's execution cut into K parts by its lines, every part an execution of
  its own that restates the branch's first line (its state), each behind a copy of the branch's prompt one token
  longer (a part number; the planner's text before the first copy as now). A sketch of a layout no trace builder makes yet: it bounds what splitting a branch
  could save, not what a model trained so would do (K times the streams per stage, each part's own stop).

    python benchmarks/countdown_stage_layout.py --config configs/countdown-data.yaml --n 400 --seed 1 --split 2 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def orders(stage_costs, extra: int) -> dict[str, int]:
    """Sequential tokens of one SPRINT trace as written, with the oracle order and with the worst order (`extra`: the
    tokens outside the stages, the preamble and the final answer)."""
    from sprint.format.metrics import StageCost

    def total(key) -> int:
        return extra + sum(StageCost(s.index, s.plan_segments, key(s.executions)).latency() for s in stage_costs)

    return {"as written": total(list),
            "longest first": total(lambda e: sorted(e, reverse=True)),
            "shortest first": total(sorted)}


def split_parts(text: str, k: int) -> list[str]:
    """An execution's text cut into up to `k` parts by its lines after the first; each part restates the first line
    (the branch's state). Fewer parts when there are fewer lines."""
    lines = text.strip().split("\n")
    head, body = lines[0], lines[1:]
    n = len(body)
    chunks = [body[i * n // k:(i + 1) * n // k] for i in range(k)]
    return ["\n".join([head] + c) for c in chunks if c] or [head]


def split_latency(trajectory, stage_costs, counter, k: int) -> int:
    """The stages' critical path with every execution split in `k` parts (`split_parts`), each behind its branch's
    prompt plus one token."""
    from sprint.format.metrics import StageCost

    total = 0
    for stage, cost in zip(trajectory.stages, stage_costs):
        if not stage.executions:
            total += cost.latency()
            continue
        segments, executions = [], []
        prompts = counter([p.text.strip() for p in stage.plan.prompts])
        for execution, segment, prompt in zip(stage.executions, cost.plan_segments, prompts):
            parts = split_parts(execution.text, k)
            # The first part's prompt comes after the plan text as now; each further part's is the same prompt
            # again plus a part number (the metric counts no tags).
            segments.extend([segment + 1] + [prompt + 1] * (len(parts) - 1))
            executions.extend(counter(parts))
        total += StageCost(cost.index, segments + cost.plan_segments[len(stage.executions):], executions).latency()
    return total


def measure(config: str, n: int, seed: int, tokenizer: str, splits: list[int] = ()) -> dict:
    """Mean sequential tokens per layout and of the sequential traces, over the usable problems of `n`."""
    from sprint.format.metrics import HFTokenCounter
    from sprint.models import resolve_model
    from sprint.tasks.countdown import problems, traces
    from sprint.tasks.countdown.data import format_metrics, load_data_config

    cfg = load_data_config(config)
    counter = HFTokenCounter(resolve_model(tokenizer))
    sums: dict[str, list[int]] = {"sequential": []}
    for p in problems.generate("test", n, seed, max_value=cfg.trace.max_value, difficulty=cfg.difficulty):
        t = traces.build_traces(p, cfg.trace)
        if t.reason is not None:
            continue
        trajectory, m, seq = format_metrics(t, counter)   # as `sprint countdown data`'s stats count them
        extra = m.total_tokens - sum(s.total for s in m.stage_costs)
        for name, tokens in orders(m.stage_costs, extra).items():
            sums.setdefault(name, []).append(tokens)
        for k in splits:
            sums.setdefault(f"split {k}", []).append(extra + split_latency(trajectory, m.stage_costs, counter, k))
        sums["sequential"].append(seq.sequential_tokens)
    if not sums["sequential"]:
        raise ValueError(f"none of the {n} problems gave usable traces")
    seq = statistics.mean(sums["sequential"])
    out = {"problems": len(sums["sequential"]), "sequential_trace_tokens": round(seq, 1)}
    for name, values in sums.items():
        if name != "sequential":
            out[name] = {"tokens": round(statistics.mean(values), 1), "ratio": round(statistics.mean(values) / seq, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/countdown-data.yaml", help="a `sprint countdown data` config")
    ap.add_argument("--n", type=int, default=400, help="held-out test problems")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokenizer", default="countdown-sprint", help="a bundled model name or a tokenizer directory")
    ap.add_argument("--split", type=int, nargs="*", default=[], metavar="K",
                    help="also each branch cut into K parts (K >= 2; see the module doc)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    if any(k < 2 for k in args.split):
        ap.error(f"--split: every K must be >= 2, got {args.split}")
    try:
        out = measure(args.config, args.n, args.seed, args.tokenizer, args.split)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

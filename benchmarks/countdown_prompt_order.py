"""How much of a Countdown SPRINT trace's critical path the order of a stage's prompts decides, on the data alone.

An executor starts once the planner has written its prompt, so a stage's critical path is the longest chain of
planner tokens up to a prompt plus that prompt's execution (`sprint.format.metrics.StageCost.latency`). The traces
list a stage's branches in the search's order. This script builds the traces of held-out problems with a data config
(`sprint countdown data`'s), and reports the mean sequential tokens of the SPRINT traces against the sequential
traces', as written and with each stage's executions reordered: longest first (an oracle: the planner cannot know
the lengths before the branches are searched) and shortest first (the worst order). The gap bounds what teaching the
planner an order could save (BENCHMARKS.md: 0.469 as written, 0.447 with the oracle on 399 problems).

    python benchmarks/countdown_prompt_order.py --config configs/countdown-data.yaml --n 400 --seed 1
"""

from __future__ import annotations

import argparse
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


def measure(config: str, n: int, seed: int, tokenizer: str) -> dict:
    """Mean sequential tokens per order and of the sequential traces, over the usable problems of `n`."""
    from sprint.format import parse
    from sprint.format.metrics import HFTokenCounter, trajectory_metrics
    from sprint.models import resolve_model
    from sprint.tasks.countdown import problems, traces
    from sprint.tasks.countdown.data import load_data_config

    cfg = load_data_config(config)
    counter = HFTokenCounter(resolve_model(tokenizer))
    sums: dict[str, list[int]] = {"sequential": []}
    for p in problems.generate("test", n, seed, max_value=cfg.trace.max_value, difficulty=cfg.difficulty):
        t = traces.build_traces(p, cfg.trace)
        if t.reason is not None:
            continue
        sprint_rec, seq_rec = traces.build_records(p.key, t, executor_records=False)[:2]
        m = trajectory_metrics(parse(sprint_rec["messages"][-1]["content"]), counter)
        extra = m.total_tokens - sum(s.total for s in m.stage_costs)
        for name, tokens in orders(m.stage_costs, extra).items():
            sums.setdefault(name, []).append(tokens)
        sums["sequential"].append(sum(counter([seq_rec["messages"][-1]["content"]])))
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
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    try:
        out = measure(args.config, args.n, args.seed, args.tokenizer)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import json

    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

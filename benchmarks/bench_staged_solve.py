"""Wall-clock of whole SPRINT solves with the in-process backend at a given `max_batch` (fast mode).

A staged run has few sequences but long contexts (the planner of stage 2 reads every execution of stage 1), so the
backend's fixed per-run costs show up here and not in `bench_decode.py`: for example KV buffers sized for all
`max_batch` slots at a long prompt's capacity. Prints, per problem, the wall-clock and each planner call's time to
first token and milliseconds per generated token.

    python benchmarks/bench_staged_solve.py --max-batch 128 [--model countdown-sprint] [--n 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="countdown-sprint")
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=2, help="held-out Countdown test problems (seed 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from sprint.backends.transformers_backend import TransformersBackend
    from sprint.inference.orchestrator import SprintConfig, solve
    from sprint.models import default_settings, resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    torch.set_num_threads(args.threads)
    backend = TransformersBackend(str(resolve_model(args.model)), device=args.device, max_batch=args.max_batch,
                                  exact=False)
    cfg = SprintConfig(**default_settings(args.model, "sprint"))
    items = load_countdown("test", args.n, 1)

    async def run() -> list[dict]:
        out = []
        for item in items:
            start = time.perf_counter()
            res = await solve(item.question, backend, cfg)
            planner = [{"stage": c.stage, "prompt_tokens": c.prompt_tokens, "generated": c.generated_tokens,
                        "ttft_s": round(c.ttft_s or 0, 3),
                        "ms_per_token": round(1000 * (c.end_s - c.start_s - (c.ttft_s or 0))
                                              / max(1, c.generated_tokens - 1), 1)}
                       for c in res.calls if c.role == "planner"]
            out.append({"wall_s": round(time.perf_counter() - start, 2), "planner": planner})
        return out

    for row in asyncio.run(run()):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
